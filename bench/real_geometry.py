"""Random-weight models at the real backbones' geometry, for timing the suite's code paths (nothing downloaded).

Each builder returns the suite's own backbone class around a randomly initialised model, so a bench times
exactly the code a run executes (`sequence_loss`, `attach`, `generate_images`, `generate_text`), only the
weights are noise. Depth is a parameter: the CPU benches use a shallow trunk of the real width, the GPU
bench the full depth. Imports torch and transformers only (the GPU image has nothing else).
"""
from __future__ import annotations

from pathlib import Path

import torch

from unifybench.models.chameleon.backbone import ChameleonBackbone

# Chameleon-7B / Anole-7B (config.json of facebook/chameleon-7b): the figures the benches are about.
CHAMELEON_7B = dict(vocab_size=65536, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)
CHAMELEON_IMAGE_IDS = (4, 8196)   # image-code BPE ids 4..8195 (8192 codes), as in the real vocabulary
CHAMELEON_BOI, CHAMELEON_EOI, CHAMELEON_EOT, CHAMELEON_PAD = 8197, 8196, 8710, 1
# Phi-1.5 inside Show-o: vocab 58498 (50295 text + 10 specials + 8192 codes + mask), 1024 codes at 512 px.
SHOWO_VOCAB, SHOWO_LLM_VOCAB, SHOWO_CODEBOOK = 58498, 50295, 8192


class RandomChameleon(ChameleonBackbone):
    """`ChameleonBackbone` around a random `ChameleonForConditionalGeneration` of any geometry.

    It skips the processor and tokenizer (token ids are arbitrary for timing) and sets the ids the decoding
    modes read directly; everything else (forward, logits, image decoding loop) is the real class's.
    """

    def __init__(self, model, device: torch.device, dtype: torch.dtype, image_seq_length: int = 1024):
        self.model, self.processor, self.tokenizer = model, None, None
        self.path, self.device, self.dtype = Path("random"), torch.device(device), dtype
        self.hidden_size, self.vocab_size = model.config.hidden_size, model.config.vocab_size
        self.image_seq_length = image_seq_length
        lo, hi = CHAMELEON_IMAGE_IDS
        hi = min(hi, self.vocab_size - 16)      # small dry-run vocabularies keep room for the ids below
        self.image_token_ids = torch.arange(lo, hi, device=self.device)
        self.bos_id, self.eos_id, self.pad_id = 0, 2, CHAMELEON_PAD
        self.boi_id, self.eoi_id, self.eot_id = hi + 1, hi, hi + 2
        self._text_banned = torch.cat([self.image_token_ids, torch.tensor([self.boi_id, self.eoi_id],
                                                                          device=self.device)])
        self._decoder = None

    @classmethod
    def build(cls, layers: int, device="cpu", dtype=torch.float32, seed: int = 0, **geometry) -> "RandomChameleon":
        """Chameleon-7B geometry with `layers` decoder layers (override any field with `geometry`)."""
        from transformers import ChameleonConfig, ChameleonForConditionalGeneration
        fields = dict(CHAMELEON_7B, num_hidden_layers=layers, **geometry)
        # A tiny VQ encoder: generation and training never run it (codes are given), it only has to exist.
        vq = dict(embed_dim=32, num_embeddings=8192, base_channels=32, channel_multiplier=[1, 1],
                  num_res_blocks=1, resolution=64, attn_resolutions=[], latent_channels=32)
        config = ChameleonConfig(**fields, vq_config=vq, vocabulary_map={})
        torch.manual_seed(seed)
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)   # initialise in the target dtype: a 7B fp32 copy would double memory
        try:
            with torch.device(device):
                model = ChameleonForConditionalGeneration(config)
        finally:
            torch.set_default_dtype(default)
        model.eval().requires_grad_(False)
        return cls(model, device, dtype)


def random_showo(layers: int, device="cpu", dtype=torch.float32, num_vq_tokens: int = 1024, seed: int = 0,
                 cache: Path | None = None, hidden: int | None = None, with_vq: bool = True):
    """`ShowoBackbone` with a random Show-o at Phi-1.5 geometry (`layers` deep) and a random MAGVIT-v2.

    The tiny Show-o's tokenizer stands in for Phi's (text ids are arbitrary for timing); `num_vq_tokens`
    sets the image-token count of the MMU prefix (1024 at 512 px)."""
    import tempfile

    from unifybench.models.showo.magvit2 import MAGVITv2
    from unifybench.models.showo.backbone import PhiConfig, Showo, ShowoBackbone, load_tokenizer
    from unifybench.models.showo.tiny import load_tiny_showo, tiny_showo_path
    cache = cache or Path(tempfile.mkdtemp(prefix="showo-geometry-"))
    root = tiny_showo_path(cache)
    tiny = load_tiny_showo(cache)
    tokenizer = load_tokenizer(root / "phi-1_5", tiny.llm_vocab_size)
    config = {"vocab_size": SHOWO_VOCAB, "llm_vocab_size": SHOWO_LLM_VOCAB, "codebook_size": SHOWO_CODEBOOK,
              "num_vq_tokens": num_vq_tokens}
    phi = PhiConfig(num_hidden_layers=layers, **({"hidden_size": hidden, "intermediate_size": 4 * hidden,
                                                   "num_attention_heads": max(hidden // 64, 1)} if hidden else {}))
    torch.manual_seed(seed)
    with torch.device(device):
        model = Showo(phi, SHOWO_VOCAB).to(dtype).eval().requires_grad_(False)
        vq = (MAGVITv2() if with_vq else tiny.vq).to(device, dtype).eval().requires_grad_(False)
    paths = {"showo": root, "phi": root, "magvit": root, "showo_weights": root, "magvit_weights": root}
    return ShowoBackbone(model, tokenizer, vq, config, paths, torch.device(device), dtype)


def sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
