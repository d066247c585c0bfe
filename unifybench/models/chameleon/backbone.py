"""Chameleon/Anole backbone: stock transformers for understanding, our own decoding loop and VQGAN decoder.

Stock transformers (5.x) loads `ChameleonForConditionalGeneration` but cannot generate images: its `forward`
sets every image-code logit to the dtype minimum, and its VQ model has no decoder. So this wrapper
- runs the inner decoder (`model.model`) directly and applies the output head itself, unmasked;
- implements Anole's image-only decoding (begin-of-image, exactly `image_seq_length` image codes sampled
  with temperature / top-k / top-p from a caller-owned `torch.Generator`, end-of-image) and a greedy
  text-only mode (image tokens forbidden);
- decodes image codes with `VQGANDecoder`, whose weights sit in Anole checkpoints beside the encoder.
Nothing is ever downloaded: models come from a local directory or the user's existing HF cache.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from PIL import Image

from unifybench.errors import UserError
from unifybench.models.local import TransformersBackbone, load_pretrained
from unifybench.models.chameleon.vqgan import VQGANDecoder
from unifybench.models.streams import image_generators

log = logging.getLogger(__name__)


# --- sampling ---------------------------------------------------------------------------------------------

def filtered_probs(scores: torch.Tensor, temperature: float = 1.0, top_k: int = 50,
                   top_p: float = 1.0) -> torch.Tensor:
    """Row-wise sampling distribution of `scores` [B, V]: temperature, then top-k, then top-p."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0 for sampling")
    scores = scores.float() / temperature
    if 0 < top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = scores.sort(dim=-1)  # ascending: drop the low tail whose total mass is <= 1 - top_p
        drop = ordered.softmax(-1).cumsum(-1) <= 1.0 - top_p
        drop[..., -1] = False  # always keep the most likely token
        scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return scores.softmax(-1)


def sample_next(scores: torch.Tensor, generator: torch.Generator, temperature: float = 1.0, top_k: int = 50,
                top_p: float = 1.0) -> torch.Tensor:
    """One token index per row of `scores` [B, V] (`filtered_probs`, then multinomial), all rows from one stream.

    The draw runs on the generator's device, so a CPU generator gives reproducible seeds on any device.
    """
    probs = filtered_probs(scores, temperature, top_k, top_p).to(generator.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(scores.device)


def sample_rows(scores: torch.Tensor, generators: list[torch.Generator], temperature: float = 1.0,
                top_k: int = 50, top_p: float = 1.0) -> torch.Tensor:
    """One token index per row of `scores` [B, V], row r drawn from `generators[r]` alone: a row's draw does not
    depend on which other rows share its batch."""
    probs = filtered_probs(scores, temperature, top_k, top_p)
    picks = [torch.multinomial(probs[r:r + 1].to(g.device), 1, generator=g) for r, g in enumerate(generators)]
    return torch.cat(picks).view(-1).to(scores.device)


# --- the KV cache ---------------------------------------------------------------------------------------------

def preallocated_cache(n_layers: int, capacity: int):
    """A transformers `Cache` whose layers write keys/values into buffers of `capacity` positions allocated at
    the first forward, so decode steps copy one position instead of re-concatenating the whole cache (the
    dynamic cache's `torch.cat` reallocates and copies O(T) per step, O(T^2) per image). Each layer hands
    attention a view of exactly the filled positions: the same shapes and values as the dynamic cache."""
    from transformers.cache_utils import Cache, DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        def lazy_initialization(self, key_states, value_states):
            b, h, _, d = key_states.shape
            self._k = key_states.new_empty(b, h, capacity, d)
            self._v = value_states.new_empty(b, h, capacity, value_states.shape[-1])
            self.keys, self.values = self._k[:, :, :0], self._v[:, :, :0]
            self.device, self.is_initialized = key_states.device, True

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            start, stop = self.keys.shape[-2], self.keys.shape[-2] + key_states.shape[-2]
            if stop > capacity:
                raise RuntimeError(f"preallocated KV cache of {capacity} positions is full")
            self._k[:, :, start:stop] = key_states
            self._v[:, :, start:stop] = value_states
            self.keys, self.values = self._k[:, :, :stop], self._v[:, :, :stop]
            return self.keys, self.values

        def get_max_length(self) -> int:
            return capacity

    return Cache(layers=[PreallocatedLayer() for _ in range(n_layers)])


# --- the backbone -----------------------------------------------------------------------------------------

class ChameleonBackbone(TransformersBackbone):
    """A loaded Chameleon/Anole model (frozen) plus the ids and decoding modes the methods need."""

    can_draw = has_hidden = takes_concept_tokens = True

    def chat_ids(self, prefix_ids: list[int] | None, parts: list) -> list[int]:
        from unifybench.models.chameleon.chat import chat_ids
        return chat_ids(self, prefix_ids, parts)

    def __init__(self, model, processor, path: Path, device: torch.device, dtype: torch.dtype):
        super().__init__(model, processor, path, device, dtype)
        config = model.config
        self.hidden_size = config.hidden_size
        self.vocab_size = config.vocab_size
        self.image_seq_length = int(processor.image_seq_length)
        vq = config.vq_config
        self.latent_grid = vq.resolution // 2 ** (len(vq.channel_multiplier) - 1)
        if self.latent_grid ** 2 != self.image_seq_length:
            raise UserError(f"{self.path}: processor image_seq_length {self.image_seq_length} does not match the "
                            f"VQ latent grid {self.latent_grid}x{self.latent_grid}")

        self._vocab = self.tokenizer.get_vocab()
        tok = self.tokenizer
        self.bos_id = tok.bos_token_id if tok.bos_token_id is not None else config.bos_token_id
        self.eos_id = tok.eos_token_id if tok.eos_token_id is not None else config.eos_token_id
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else config.pad_token_id
        if tok.sep_token is None:
            raise UserError(f"{self.path}: tokenizer has no sep token (Chameleon's end of turn, <reserved08706>)")
        self.eot_id = self.token_id(tok.sep_token)
        self.boi_id = self.token_id(processor.image_start_token)
        self.eoi_id = self.token_id(processor.image_end_token)

        # Image codes come from the config's vocabulary map (names "IMGIMG<letters>Z"), via transformers' mapping.
        mapping = model.model.vocabulary_mapping
        bpe2code = mapping.bpe2img
        if not bpe2code or max(bpe2code.values()) >= vq.num_embeddings:
            raise UserError(f"{self.path}: the vocabulary map's image tokens do not fit the {vq.num_embeddings}-code "
                            f"VQ codebook")
        self.image_token_ids = torch.tensor(sorted(bpe2code), dtype=torch.long, device=device)
        lookup = torch.full((self.vocab_size,), -1, dtype=torch.long)
        lookup[torch.tensor(list(bpe2code))] = torch.tensor(list(bpe2code.values()))
        self._bpe_to_code = lookup.to(device)
        # Text-only mode may not start, continue or close an image.
        self._text_banned = torch.cat([self.image_token_ids,
                                       torch.tensor([self.boi_id, self.eoi_id], device=device)])
        self._decoder: VQGANDecoder | None = None

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
             require_decoder: bool = True) -> "ChameleonBackbone":
        """Load from a local directory or a cached hub id. `require_decoder=False` defers the VQGAN decoder
        check to the first `decode_images` call (for understanding-only checkpoints such as chameleon-7b)."""
        from transformers import ChameleonForConditionalGeneration, ChameleonProcessor

        local, model, processor, info = load_pretrained(path, ChameleonForConditionalGeneration, ChameleonProcessor,
                                                        "chameleon", "Chameleon", device, dtype)
        others = [k for k in info["unexpected_keys"] if "vqmodel.decoder." not in k]
        if others:  # the VQGAN decoder is expected to be unknown to transformers; anything else is worth a note
            log.warning("%s: %d checkpoint tensors unused by transformers (e.g. %s)", local, len(others), others[0])

        backbone = cls(model, processor, local, torch.device(device), dtype)
        if require_decoder:
            backbone.decoder  # noqa: B018 - load now so a checkpoint without a decoder fails at load time
        return backbone

    # --- tokens ---
    def token_id(self, name: str) -> int:
        if name not in self._vocab:
            raise UserError(f"token {name!r} is not in the tokenizer of {self.path}")
        return int(self._vocab[name])

    def encode_text(self, text: str, add_bos: bool = False) -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return ([self.bos_id] if add_bos else []) + list(ids)

    # --- modules that concept tokens replace ---
    def input_embeddings(self):
        return self.model.model.embed_tokens

    def set_input_embeddings(self, module) -> None:
        self.model.model.embed_tokens = module

    def output_head(self):
        return self.model.lm_head

    def set_output_head(self, module) -> None:
        self.model.lm_head = module

    # --- forward ---
    def forward_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                       past_key_values=None, use_cache: bool = False, position_ids: torch.Tensor | None = None):
        """Last hidden states [B, T, H] and the KV cache, from the inner decoder (no image-logit masking)."""
        out = self.model.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               cache=past_key_values, use_cache=use_cache)
        return out.last_hidden_state, out.cache   # transformers' `cache` (5.x: `past_key_values` is deprecated)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(hidden)

    # --- decoding modes ---
    @torch.no_grad()
    def generate_text(self, input_ids: torch.Tensor, max_new_tokens: int = 30) -> list[int]:
        """Greedy text-only continuation of one sequence [1, T]; returns the new ids without the stop token."""
        ids = input_ids.to(self.device)
        if ids.dim() == 1:
            ids = ids[None]
        if ids.shape[0] != 1:
            raise ValueError("generate_text decodes one sequence; got batch size %d" % ids.shape[0])
        stop = {self.eot_id, self.eos_id}
        new: list[int] = []
        past, step = self.kv_cache(ids.shape[1] + max_new_tokens), ids
        for _ in range(max_new_tokens):
            hidden, past = self.forward_hidden(step, past_key_values=past, use_cache=True)
            scores = self.logits(hidden[:, -1]).float()
            scores[:, self._text_banned] = float("-inf")
            token = int(scores.argmax(-1))
            if token in stop:
                break
            new.append(token)
            step = torch.tensor([[token]], device=self.device)
        return new

    def kv_cache(self, capacity: int):
        """A KV cache preallocated for `capacity` positions (prompt + every token a decode will add)."""
        return preallocated_cache(self.model.config.num_hidden_layers, capacity)

    @torch.no_grad()
    def generate_images(self, prompt_ids: list[int], n: int, generator: torch.Generator, temperature: float = 1.0,
                        top_k: int = 50, top_p: float = 1.0, batch_size: int = 8) -> torch.Tensor:
        """Anole image-only decoding: prompt + begin-of-image, then exactly `image_seq_length` image codes.

        Returns BPE ids [n, image_seq_length] on the CPU (begin/end-of-image not included). Image i is drawn
        from its own stream (`unifybench.models.streams`), so the same seed gives the same codes at any
        `batch_size` (images per forward: a throughput setting).

        One difference from the reference, on purpose: the Yo'Chameleon pipeline (`model.generate(...,
        multimodal_generation_mode="image-only")` of its transformers fork) *samples* the first token among
        the image codes, begin-of-image and end-of-image, and then decodes `response[:, 1:-1]` whatever the
        first token was; only a drawn begin-of-image opens the window in which every next token must be an
        image code. Here begin-of-image is written, not drawn, so every image is a full grid of codes (the
        draw it replaces is the one that yields a valid image in the reference; any other first token gives it
        codes mixed with begin/end tokens or shifted by one). The first draw of the random stream therefore
        differs from the reference's.
        """
        return self.generate_image_rows([list(prompt_ids)] * n, image_generators(generator, n), temperature,
                                        top_k, top_p, batch_size)

    @torch.no_grad()
    def generate_image_rows(self, prompts: list[list[int]], generators: list[torch.Generator],
                            temperature: float = 1.0, top_k: int = 50, top_p: float = 1.0,
                            batch_size: int = 8) -> torch.Tensor:
        """One image per (prompt, generator) row, `batch_size` rows per forward across prompts: codes [N, L].

        Rows are batched in order of prompt length (least padding); a batch of unequal prompts is left-padded
        with an attention mask and explicit positions, so each row sees exactly its own prompt."""
        if len(prompts) != len(generators):
            raise ValueError("generate_image_rows needs one generator per prompt")
        out: list[torch.Tensor | None] = [None] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda r: len(prompts[r]))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            codes = self._draw_batch([prompts[r] for r in rows], [generators[r] for r in rows],
                                     temperature, top_k, top_p)
            for r, c in zip(rows, codes):
                out[r] = c
        if not out:
            return torch.empty(0, self.image_seq_length, dtype=torch.long)
        return torch.stack(out)

    def _draw_batch(self, prompts: list[list[int]], generators: list[torch.Generator], temperature: float,
                    top_k: int, top_p: float) -> torch.Tensor:
        n_codes, allowed, dev = self.image_seq_length, self.image_token_ids, self.device
        lengths = [len(p) + 1 for p in prompts]                       # + begin-of-image
        width, b = max(lengths), len(prompts)
        ids = torch.full((b, width), self.pad_id if self.pad_id is not None else self.eos_id, dtype=torch.long)
        mask = torch.ones((b, width + n_codes - 1), dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, width - lengths[r]:] = torch.tensor(list(p) + [self.boi_id])
            mask[r, :width - lengths[r]] = 0
        ids, mask = ids.to(dev), mask.to(dev)
        padded = min(lengths) < width     # equal prompts take the unmasked path, exactly as a single prompt
        positions = (mask[:, :width].cumsum(-1) - 1).clamp_min(0) if padded else None
        cache = self.kv_cache(width + n_codes - 1)
        hidden, cache = self.forward_hidden(ids, attention_mask=mask[:, :width] if padded else None,
                                            position_ids=positions, past_key_values=cache, use_cache=True)
        codes = []
        for i in range(n_codes):
            scores = self.logits(hidden[:, -1])[:, allowed]  # only image codes are candidates
            token = allowed[sample_rows(scores, generators, temperature, top_k, top_p)]
            codes.append(token)
            if i + 1 < n_codes:  # the end-of-image token is implied, not decoded
                step_mask = mask[:, :width + i + 1] if padded else None
                step_pos = positions[:, -1:] + i + 1 if padded else None
                hidden, cache = self.forward_hidden(token[:, None], attention_mask=step_mask, position_ids=step_pos,
                                                    past_key_values=cache, use_cache=True)
        return torch.stack(codes, dim=1).cpu()

    # --- images <-> tokens ---
    @torch.no_grad()
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """BPE ids [B, image_seq_length] of the images, with the processor's resize/crop/normalisation."""
        pixels = self.processor.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        ids = self.model.model.get_image_tokens(pixels.to(self.device, self.dtype))
        return ids.long()

    @property
    def decoder(self) -> VQGANDecoder:
        if self._decoder is None:
            decoder = VQGANDecoder.from_checkpoint(self.path, self.model.config.vq_config)
            self._decoder = decoder.to(self.device, self.dtype).eval().requires_grad_(False)
        return self._decoder

    @torch.no_grad()
    def decode_images(self, bpe_ids: torch.Tensor, chunk_size: int = 8) -> list[Image.Image]:
        """Image-code BPE ids [B, image_seq_length] -> RGB images (the VQ resolution, e.g. 512x512 for Anole)."""
        ids = torch.as_tensor(bpe_ids).to(self.device).long()
        if ids.dim() != 2 or ids.shape[1] != self.image_seq_length:
            raise ValueError(f"expected ids of shape [B, {self.image_seq_length}], got {tuple(ids.shape)}")
        codes = self._bpe_to_code[ids]
        if bool((codes < 0).any()):
            raise ValueError("decode_images got ids that are not image-code tokens")
        codebook = self.model.model.vqmodel.quantize.embedding
        g = self.latent_grid
        images: list[Image.Image] = []
        for chunk in codes.split(chunk_size):
            quant = codebook(chunk).view(chunk.shape[0], g, g, -1).permute(0, 3, 1, 2).contiguous()
            pixels = self.decoder(quant.to(self.dtype)).float()
            images.extend(self._to_pil(p) for p in pixels)
        return images

    def _to_pil(self, pixels: torch.Tensor) -> Image.Image:
        # Invert the image processor's normalisation (Chameleon: x / 128 - 1 -> ~[-1, 1]) back to 0..255.
        ip = self.processor.image_processor
        x = pixels
        if getattr(ip, "do_normalize", False):
            std = torch.tensor(ip.image_std, device=x.device).view(-1, 1, 1)
            mean = torch.tensor(ip.image_mean, device=x.device).view(-1, 1, 1)
            x = x * std + mean
        x = x / ip.rescale_factor if getattr(ip, "do_rescale", False) else (x + 1) * 127.5
        # Truncated, not rounded, to 8 bits: the Yo'Chameleon pipeline's postprocess ends in
        # `torch.clip(x, 0, 255).to(torch.uint8)`; rounding would add about +0.5/255 on average.
        array = x.clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(array)  # uint8 HxWx3 -> RGB
