"""Show-o (Xie et al., 2024) for inference and concept-token training: a clean-room re-implementation.

Built from the facts in the project notes (sections 3-5), no reference code:
- the LLM is Phi-1.5 (parallel block: h = x + Attn(LN(x)) + MLP(LN(x)) with one LayerNorm; biased q/k/v/dense;
  partial rotary embedding (the first `partial_rotary_factor` of each head, rotate-half, theta 10000);
  `gelu_new`), with the q/k LayerNorm over head_dim that Show-o forces on (applied before RoPE), a biased
  output head, and the vocabulary resized to 58498 = 50295 text + 10 specials + 8192 image codes + mask;
- state-dict names as in `showlab/show-o-512x512`: `showo.model.embed_tokens.weight`,
  `showo.model.layers.{i}.{input_layernorm,self_attn.{q,k,v}_proj,self_attn.dense,self_attn.{q,k}_layernorm,
  mlp.fc1,mlp.fc2}.*`, `showo.model.final_layernorm.*`, `showo.lm_head.{weight,bias}`;
- omni-attention (4-D masks built by the caller): T2I = causal text, bidirectional image segment that sees
  all non-pad text, no non-pad row sees a pad; MMU = causal, but every row sees the whole
  `[<|mmu|>, <|soi|>, image, <|eoi|>]` prefix;
- MaskGIT decoding (cosine schedule, Gumbel-noised confidence re-masking with a multiplicatively decaying
  noise temperature, guidance `(1 + w) * cond - w * uncond`), and greedy MMU decoding WITH a KV cache
  (`use_cache=False` recomputes the whole sequence per token as the reference does; both give the same
  tokens).

Concept tokens are not inserted into the vocabulary (which would shift every image id and copy the 58k-row
matrices): the backbone reserves ids *after* the last one (`reserve_tokens`), whose embedding reads zeros
and whose logits are -inf until `concept_tokens.attach` splices learned rows in. A permutation of vocabulary
rows changes nothing in the model, so this is the reference's computation with different id numbers.

Loading reads three local folders laid out like the hub repositories: Show-o (`config.json` +
`pytorch_model.safetensors`), Phi-1.5 (`config.json` + tokenizer files) and MAGVIT-v2. Pickled `.bin`
weights are refused, never unpickled.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from unifybench.errors import UserError
from unifybench.models.contract import Backbone
from unifybench.models.showo.magvit2 import MAGVITv2, load_safetensors_strict, weight_file

DEFAULT_CHECKPOINT = "showlab/show-o-512x512"
DEFAULT_LLM = "microsoft/phi-1_5"          # the tokenizer + Phi config folder
DEFAULT_VQ = "showlab/magvitv2"
PAD = "[PAD]"
EOT = "<|endoftext|>"
SPECIALS = ("<|soi|>", "<|eoi|>", "<|sov|>", "<|eov|>", "<|t2i|>", "<|mmu|>", "<|t2v|>", "<|v2v|>", "<|lvg|>")
NUM_NEW_SPECIAL = 1 + len(SPECIALS)   # [PAD] + 9 = 10


# ----------------------------------------------------------------------------------------------- the model

@dataclass
class PhiConfig:
    hidden_size: int = 2048
    intermediate_size: int = 8192
    num_hidden_layers: int = 24
    num_attention_heads: int = 32
    layer_norm_eps: float = 1e-5
    partial_rotary_factor: float = 0.5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 2048
    hidden_act: str = "gelu_new"

    @classmethod
    def from_hf(cls, d: dict) -> "PhiConfig":
        vals = {k: d[k] for k in cls.__dataclass_fields__ if k in d and d[k] is not None}
        rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
        if "rope_theta" not in vals and isinstance(rope, dict) and "rope_theta" in rope:
            vals["rope_theta"] = rope["rope_theta"]
        if "partial_rotary_factor" not in vals and isinstance(rope, dict) and "partial_rotary_factor" in rope:
            vals["partial_rotary_factor"] = rope["partial_rotary_factor"]
        nkv = d.get("num_key_value_heads")
        if nkv not in (None, vals.get("num_attention_heads", cls.num_attention_heads)):
            raise UserError(f"Phi config: num_key_value_heads {nkv} != num_attention_heads (Phi-1.5 has none)")
        if vals.get("hidden_act", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
            raise UserError(f"Phi config: hidden_act {vals['hidden_act']!r} is not supported (gelu_new)")
        return cls(**vals)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)


class ExtendableEmbedding(nn.Embedding):
    """nn.Embedding (same parameter name) that also accepts `n_reserved` ids past the end: zero rows."""

    n_reserved = 0

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.n_reserved and bool((ids >= self.num_embeddings).any()):
            extra = ids >= self.num_embeddings
            out = super().forward(ids.masked_fill(extra, 0))
            return out.masked_fill(extra.unsqueeze(-1), 0.0)
        return super().forward(ids)


class ExtendableLinear(nn.Linear):
    """nn.Linear head with `n_reserved` extra output columns fixed at -inf (filled by spliced concept rows)."""

    n_reserved = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if self.n_reserved:
            pad = out.new_full((*out.shape[:-1], self.n_reserved), float("-inf"))
            out = torch.cat([out, pad], dim=-1)
        return out


def _rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


class PhiAttention(nn.Module):
    def __init__(self, cfg: PhiConfig):
        super().__init__()
        h, hd = cfg.hidden_size, cfg.head_dim
        self.cfg = cfg
        self.q_proj = nn.Linear(h, h)
        self.k_proj = nn.Linear(h, h)
        self.v_proj = nn.Linear(h, h)
        self.dense = nn.Linear(h, h)
        self.q_layernorm = nn.LayerNorm(hd, eps=cfg.layer_norm_eps)
        self.k_layernorm = nn.LayerNorm(hd, eps=cfg.layer_norm_eps)

    def _rope(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        rot = self.cfg.rotary_dim
        inv = 1.0 / (self.cfg.rope_theta ** (torch.arange(0, rot, 2, device=x.device, dtype=torch.float32) / rot))
        freqs = positions.to(torch.float32)[:, None] * inv[None]
        emb = torch.cat([freqs, freqs], dim=-1)                   # [L, rot]
        cos, sin = emb.cos(), emb.sin()
        xr, xp = x[..., :rot], x[..., rot:]
        return torch.cat([xr * cos + _rotate_half(xr) * sin, xp], dim=-1)

    def forward(self, x, mask, positions, past=None):
        b, n, _ = x.shape
        nh, hd = self.cfg.num_attention_heads, self.cfg.head_dim
        q = self.q_layernorm(self.q_proj(x).view(b, n, nh, hd)).transpose(1, 2).float()
        k = self.k_layernorm(self.k_proj(x).view(b, n, nh, hd)).transpose(1, 2).float()
        v = self.v_proj(x).view(b, n, nh, hd).transpose(1, 2).float()
        q, k = self._rope(q, positions), self._rope(k, positions)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)     # fp32 logits and softmax
        out = out.transpose(1, 2).reshape(b, n, nh * hd).to(x.dtype)
        return self.dense(out), (k, v)


class PhiMLP(nn.Module):
    def __init__(self, cfg: PhiConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class PhiDecoderLayer(nn.Module):
    def __init__(self, cfg: PhiConfig):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = PhiAttention(cfg)
        self.mlp = PhiMLP(cfg)

    def forward(self, x, mask, positions, past=None):
        h = self.input_layernorm(x)
        attn, kv = self.self_attn(h, mask, positions, past)
        return x + attn + self.mlp(h), kv


class PhiModel(nn.Module):
    def __init__(self, cfg: PhiConfig, vocab_size: int):
        super().__init__()
        self.embed_tokens = ExtendableEmbedding(vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([PhiDecoderLayer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.final_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)


class PhiForCausalLM(nn.Module):
    def __init__(self, cfg: PhiConfig, vocab_size: int):
        super().__init__()
        self.model = PhiModel(cfg, vocab_size)
        self.lm_head = ExtendableLinear(cfg.hidden_size, vocab_size, bias=True)


class Showo(nn.Module):
    """The module tree of the public checkpoint: everything under `showo.` (w_clip_vit=False)."""

    def __init__(self, cfg: PhiConfig, vocab_size: int):
        super().__init__()
        self.phi_config = cfg
        self.vocab_size = vocab_size
        self.mask_token_id = vocab_size - 1
        self.showo = PhiForCausalLM(cfg, vocab_size)

    def forward_hidden(self, input_ids, mask, positions, past=None):
        """Final-layer-normed hidden states and the per-layer (k, v) cache."""
        m = self.showo.model
        x = m.embed_tokens(input_ids)
        new_past = []
        for i, layer in enumerate(m.layers):
            x, kv = layer(x, mask, positions, None if past is None else past[i])
            new_past.append(kv)
        return m.final_layernorm(x), new_past


def expected_state_dict_shapes(cfg: PhiConfig, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """The key -> shape list of a Show-o checkpoint, written out from the notes (section 5.2)."""
    h, f, hd = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    out = {"showo.model.embed_tokens.weight": (vocab_size, h)}
    for i in range(cfg.num_hidden_layers):
        p = f"showo.model.layers.{i}."
        out[p + "input_layernorm.weight"] = (h,)
        out[p + "input_layernorm.bias"] = (h,)
        for proj in ("q_proj", "k_proj", "v_proj", "dense"):
            out[p + f"self_attn.{proj}.weight"] = (h, h)
            out[p + f"self_attn.{proj}.bias"] = (h,)
        for ln in ("q_layernorm", "k_layernorm"):
            out[p + f"self_attn.{ln}.weight"] = (hd,)
            out[p + f"self_attn.{ln}.bias"] = (hd,)
        out[p + "mlp.fc1.weight"] = (f, h)
        out[p + "mlp.fc1.bias"] = (f,)
        out[p + "mlp.fc2.weight"] = (h, f)
        out[p + "mlp.fc2.bias"] = (h,)
    out["showo.model.final_layernorm.weight"] = (h,)
    out["showo.model.final_layernorm.bias"] = (h,)
    out["showo.lm_head.weight"] = (vocab_size, h)
    out["showo.lm_head.bias"] = (vocab_size,)
    return out


# ----------------------------------------------------------------------------------------------- masks

def additive(allowed: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Boolean [B, Lq, Lk] (True = may attend) -> additive [B, 1, Lq, Lk] with a finite large negative."""
    out = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    out = out.masked_fill(~allowed, torch.finfo(dtype).min)
    return out.unsqueeze(1)


def causal_mask(batch: int, length: int, device=None) -> torch.Tensor:
    return torch.ones(length, length, dtype=torch.bool, device=device).tril().expand(batch, length, length)


def t2i_mask(ids: torch.Tensor, pad_id: int, soi_id: int, eoi_id: int) -> torch.Tensor:
    """Omni-attention for `[PAD].. <|t2i|> text <|soi|> image <|eoi|>` rows: boolean [B, L, L].

    Text and pad rows are causal; rows from <|soi|> to <|eoi|> see every position of their sequence but
    pads (bidirectional image); no non-pad row sees a pad column; pad rows see earlier pads.
    """
    b, n = ids.shape
    is_pad = ids == pad_id
    allowed = causal_mask(b, n, ids.device).clone()
    allowed &= ~((~is_pad)[:, :, None] & is_pad[:, None, :])
    pos = torch.arange(n, device=ids.device)
    has_soi = (ids == soi_id).any(1)
    soi = torch.where(has_soi, (ids == soi_id).float().argmax(1), torch.full_like(ids[:, 0], n))
    eoi = torch.where((ids == eoi_id).any(1), (ids == eoi_id).float().argmax(1), torch.full_like(ids[:, 0], n - 1))
    in_image = (pos[None] >= soi[:, None]) & (pos[None] <= eoi[:, None])
    allowed |= in_image[:, :, None] & (~is_pad)[:, None, :]
    return allowed


def mmu_mask(ids: torch.Tensor, eoi_id: int) -> torch.Tensor:
    """Causal, except that every row sees every column up to the first <|eoi|> (the image prefix)."""
    b, n = ids.shape
    allowed = causal_mask(b, n, ids.device).clone()
    has = (ids == eoi_id).any(1)
    first = torch.where(has, (ids == eoi_id).float().argmax(1), torch.full_like(ids[:, 0], -1))
    pos = torch.arange(n, device=ids.device)
    allowed |= (pos[None, None, :] <= first[:, None, None]).expand(b, n, n)
    return allowed


# ----------------------------------------------------------------------------------------------- MaskGIT

def sample_categorical(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One index per row of `probs` [R, C] by inverse-CDF sampling (one uniform per row, drawn on the
    generator's device). Same distribution as torch.multinomial(probs, 1), ~50x faster on CPU for 8192 columns."""
    cdf = probs.float().cumsum(-1)
    u = torch.rand(probs.shape[0], 1, generator=generator, device=generator.device).to(probs.device)
    idx = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
    return idx.squeeze(-1).clamp(max=probs.shape[-1] - 1)


def cosine_schedule(ratio: float) -> torch.Tensor:
    """Fraction of image tokens still masked after a step at `ratio` = (step + 1) / steps, in float32 as the
    reference computes it (`torch.cos(torch.tensor(ratio) * pi * 0.5)`): at ratio 2/3 float32 gives
    0.49999997, float64 0.5000000000000001, so 1024 tokens re-mask 511, not 512."""
    return torch.cos(torch.tensor(ratio, dtype=torch.float32) * math.pi * 0.5)


def mask_lengths(n_tokens: int, step: int, steps: int, unknown: torch.Tensor) -> torch.Tensor:
    """How many tokens to re-mask after `step`: floor(N cos(pi/2 (s+1)/T)) in float32, clamped to
    [1, unknown - 1]."""
    length = int((n_tokens * cosine_schedule((step + 1) / steps)).floor())
    return torch.clamp(torch.minimum(unknown - 1, torch.full_like(unknown, length)), min=1)


# ----------------------------------------------------------------------------------------------- the backbone

def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except OSError as e:
        raise UserError(f"{path}: cannot read the {what} ({e.strerror})") from None
    except ValueError as e:
        raise UserError(f"{path}: the {what} is not JSON ({e})") from None


class ShowoBackbone(Backbone):
    """A loaded, frozen Show-o + Phi tokenizer + MAGVIT-v2, with the ids, formats and decoding modes."""

    can_draw = has_hidden = takes_concept_tokens = True

    def __init__(self, model: Showo, tokenizer, vq: MAGVITv2, config: dict, paths: dict[str, Path],
                 device: torch.device, dtype: torch.dtype):
        self.model = model
        self.tokenizer = tokenizer
        self.vq = vq
        self.config = config
        self.paths = paths
        self.path = paths["showo"]
        self.device = device
        self.dtype = dtype
        self.hidden_size = model.phi_config.hidden_size
        self.vocab_size = int(config["vocab_size"])
        self.llm_vocab_size = int(config["llm_vocab_size"])
        self.codebook_size = int(config["codebook_size"])
        self.num_vq_tokens = int(config["num_vq_tokens"])
        self.grid = int(round(self.num_vq_tokens ** 0.5))
        self.resolution = self.grid * vq.cfg.downsample
        self.max_text_len = 128                    # T2I prompt length (the yaml's max_seq_length)
        vocab = tokenizer.get_vocab()
        self._vocab = vocab
        self.pad_id = vocab[PAD]
        self.soi_id, self.eoi_id, _, _, self.t2i_id, self.mmu_id, _, _, _ = (vocab[s] for s in SPECIALS)
        self.eot_id = vocab[EOT]                   # <|endoftext|>: sot = eot = bos = eos
        self.bos_id = self.eos_id = self.eot_id
        self.boi_id = self.soi_id                  # the names the forgetting evaluators use
        self.image_offset = self.llm_vocab_size + NUM_NEW_SPECIAL
        self.mask_id = self.vocab_size - 1
        self.image_token_ids = torch.arange(self.image_offset, self.vocab_size)   # codes + mask: never text
        self.n_reserved = 0

    # --- loading ---
    @classmethod
    def load(cls, showo_dir: str | Path, phi_dir: str | Path, magvit_dir: str | Path,
             device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> "ShowoBackbone":
        showo_dir, phi_dir, magvit_dir = Path(showo_dir), Path(phi_dir), Path(magvit_dir)
        config = _read_json(showo_dir / "config.json", "Show-o config")
        if config.get("_class_name", "Showo") != "Showo":
            raise UserError(f"{showo_dir}/config.json: _class_name is {config.get('_class_name')!r}, expected 'Showo'")
        for key in ("vocab_size", "llm_vocab_size", "codebook_size", "num_vq_tokens"):
            if not isinstance(config.get(key), int):
                raise UserError(f"{showo_dir}/config.json: missing integer field {key!r}")
        if config.get("w_clip_vit"):
            raise UserError(f"{showo_dir}: w_clip_vit checkpoints (CLIP-ViT understanding) are not supported")
        v, lv, cb = config["vocab_size"], config["llm_vocab_size"], config["codebook_size"]
        if v != lv + NUM_NEW_SPECIAL + cb + 1:
            raise UserError(f"{showo_dir}/config.json: vocab_size {v} != llm_vocab_size {lv} + 10 + codebook {cb} + 1")
        if config.get("mask_token_id", v - 1) != v - 1:
            raise UserError(f"{showo_dir}/config.json: mask_token_id must be vocab_size - 1")
        phi_cfg = PhiConfig.from_hf(_read_json(phi_dir / "config.json", "Phi config"))
        tokenizer = load_tokenizer(phi_dir, lv)
        with torch.device("meta"):
            model = Showo(phi_cfg, v)
        wfile = weight_file(showo_dir, "Show-o")
        state = load_safetensors_strict(wfile, model, "Show-o")
        model.load_state_dict(state, strict=True, assign=True)
        del state
        device = torch.device(device)
        model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        vq = MAGVITv2.load(magvit_dir, device=device, dtype=dtype)
        if vq.cfg.codebook_size != cb:
            raise UserError(f"{magvit_dir}: MAGVIT-v2 has {vq.cfg.codebook_size} codes, Show-o expects {cb}")
        grid = int(round(config["num_vq_tokens"] ** 0.5))
        if grid * grid != config["num_vq_tokens"]:
            raise UserError(f"{showo_dir}/config.json: num_vq_tokens {config['num_vq_tokens']} is not a square grid")
        paths = {"showo": showo_dir, "phi": phi_dir, "magvit": magvit_dir,
                 "showo_weights": wfile, "magvit_weights": vq.weight_path}
        return cls(model, tokenizer, vq, config, paths, device, dtype)

    def weight_files(self) -> list[Path]:
        return [self.paths["showo_weights"], self.paths["magvit_weights"]]

    def blank_image(self) -> Image.Image:
        """The black stand-in image UnifyBench gives Show-o for text-only questions (its `black_512x512.png`)."""
        return Image.new("RGB", (self.resolution, self.resolution))

    # --- reserved ids for concept tokens ---
    def reserve_tokens(self, n: int) -> list[int]:
        """Ids vocab_size .. vocab_size + n - 1 for concept tokens (zero embedding, -inf logit until attached)."""
        self.n_reserved = n
        base_emb = self.input_embeddings()
        base_emb = getattr(base_emb, "base", base_emb)
        base_head = self.output_head()
        base_head = getattr(base_head, "base", base_head)
        base_emb.n_reserved = n
        base_head.n_reserved = n
        return list(range(self.vocab_size, self.vocab_size + n))

    # --- tokens ---
    def token_id(self, name: str) -> int:
        if name not in self._vocab:
            raise UserError(f"token {name!r} is not in the Show-o tokenizer ({self.paths['phi']})")
        return int(self._vocab[name])

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False)) if text else []

    def decode_text(self, ids: list[int]) -> str:
        ids = [i for i in ids if i < self.llm_vocab_size]  # drop specials, image codes, concept tokens
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # --- modules concept tokens replace ---
    def input_embeddings(self):
        return self.model.showo.model.embed_tokens

    def set_input_embeddings(self, module) -> None:
        self.model.showo.model.embed_tokens = module

    def output_head(self):
        return self.model.showo.lm_head

    def set_output_head(self, module) -> None:
        self.model.showo.lm_head = module

    # --- forward ---
    def forward_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                       past_key_values=None, use_cache: bool = False):
        """Hidden states [B, L, H] (and the cache). `attention_mask`: None (causal, or all-visible after a
        cache), a 2-D [B, L] padding mask (causal + keys not padded), or a boolean [B, L, L_total] /
        additive [B, 1, L, L_total] omni-attention mask."""
        ids = input_ids.to(self.device)
        b, n = ids.shape
        past_len = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        if attention_mask is None:
            allowed = None if past_len else causal_mask(b, n, ids.device)
            mask = None if allowed is None else additive(allowed)
        elif attention_mask.dim() == 2:
            keep = attention_mask.to(ids.device).bool()
            if past_len:
                raise ValueError("a 2-D padding mask cannot be combined with a cache")
            allowed = causal_mask(b, n, ids.device) & keep[:, None, :]
            allowed |= torch.eye(n, dtype=torch.bool, device=ids.device)  # no fully masked row
            mask = additive(allowed)
        elif attention_mask.dtype == torch.bool:
            mask = additive(attention_mask.to(ids.device))
        else:
            mask = attention_mask.to(ids.device, torch.float32)
        positions = torch.arange(past_len, past_len + n, device=ids.device)
        hidden, past = self.model.forward_hidden(ids, mask, positions, past_key_values)
        return hidden, (past if use_cache else None)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output_head()(hidden).float()

    # --- sequence formats ---
    def t2i_prompt(self, text_ids: list[int]) -> list[int]:
        """`[PAD].. <|t2i|> <|endoftext|> text <|endoftext|>`, left-padded to max_text_len + 1 (129)."""
        core = [self.eot_id] + list(text_ids) + [self.eot_id]
        if len(core) > self.max_text_len:
            core = core[:self.max_text_len - 1] + [self.eot_id]
        return [self.pad_id] * (self.max_text_len - len(core)) + [self.t2i_id] + core

    def uncond_prompt(self) -> list[int]:
        return self.t2i_prompt([])

    def t2i_sequence(self, prompt: list[int], image_ids: list[int]) -> list[int]:
        return list(prompt) + [self.soi_id] + list(image_ids) + [self.eoi_id]

    def mmu_prefix(self, codes: list[int] | torch.Tensor, sot: bool = True) -> list[int]:
        """`<|mmu|> <|soi|> image <|eoi|>` (+ `<|endoftext|>` as start of text at evaluation)."""
        img = [int(c) + self.image_offset for c in (codes.tolist() if torch.is_tensor(codes) else codes)]
        return [self.mmu_id, self.soi_id] + img + [self.eoi_id] + ([self.eot_id] if sot else [])

    def chat_ids(self, prefix_ids: list[int] | None, parts: list) -> list[int]:
        from unifybench.models.showo.chat import chat_ids
        return chat_ids(self, prefix_ids, parts)

    def t2i_mask(self, ids: torch.Tensor) -> torch.Tensor:
        return t2i_mask(ids, self.pad_id, self.soi_id, self.eoi_id)

    def mmu_mask(self, ids: torch.Tensor) -> torch.Tensor:
        return mmu_mask(ids, self.eoi_id)

    # --- understanding ---
    @torch.no_grad()
    def generate_text(self, input_ids, max_new_tokens: int = 100, use_cache: bool = True,
                      stop_at_eot: bool = True) -> list[int]:
        """Greedy MMU decoding of one sequence; stops at <|endoftext|> (not returned).

        With `use_cache` the prefix is encoded once under the MMU mask and each new token attends to the
        cache; without, the whole sequence is recomputed per token (the reference behaviour)."""
        ids = torch.as_tensor(input_ids, device=self.device).long()
        if ids.dim() == 1:
            ids = ids[None]
        if ids.shape[0] != 1:
            raise ValueError("generate_text decodes one sequence")
        new: list[int] = []
        if use_cache:
            hidden, past = self.forward_hidden(ids, self.mmu_mask(ids), use_cache=True)
            for _ in range(max_new_tokens):
                token = int(self.logits(hidden[:, -1]).argmax(-1))
                if token == self.eot_id and stop_at_eot:
                    break
                new.append(token)
                if len(new) == max_new_tokens:
                    break
                hidden, past = self.forward_hidden(torch.tensor([[token]], device=self.device),
                                                   past_key_values=past, use_cache=True)
            return new
        seq = ids
        for _ in range(max_new_tokens):
            hidden, _ = self.forward_hidden(seq, self.mmu_mask(seq))
            token = int(self.logits(hidden[:, -1]).argmax(-1))
            if token == self.eot_id and stop_at_eot:
                break
            new.append(token)
            seq = torch.cat([seq, torch.tensor([[token]], device=self.device)], dim=1)
        return new

    # --- generation ---
    @torch.no_grad()
    def generate_images(self, prompt: list[int], n: int, generator: torch.Generator, steps: int = 50,
                        guidance: float = 5.0, batch_size: int = 4, record_steps: tuple[int, ...] = (),
                        noise_temperature: float = 1.0):
        """MaskGIT: `n` images for one T2I prompt (from `t2i_prompt`); codes [n, N] in 0..codebook-1 (CPU).

        With `record_steps`, also returns {step: [n, N] sampled ids at that step} (kept tokens plus the
        fresh samples at still-masked positions), for "generation as perception"."""
        out, records = [], {s: [] for s in record_steps}
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            codes, rec = self._maskgit([prompt] * b, generator, steps, guidance, set(record_steps),
                                       noise_temperature)
            out.append(codes.cpu())
            for s in record_steps:
                records[s].append(rec[s].cpu())
        codes = torch.cat(out) if out else torch.empty(0, self.num_vq_tokens, dtype=torch.long)
        if record_steps:
            return codes, {s: torch.cat(v) for s, v in records.items()}
        return codes

    def _maskgit(self, prompts: list[list[int]], generator: torch.Generator, steps: int, guidance: float,
                 record: set[int], noise_temperature: float):
        dev, gdev = self.device, generator.device
        n_tok, off, cb = self.num_vq_tokens, self.image_offset, self.codebook_size
        b = len(prompts)
        cond = torch.tensor(prompts, dtype=torch.long, device=dev)
        uncond = torch.tensor([self.uncond_prompt()] * b, dtype=torch.long, device=dev)
        soi = torch.full((b, 1), self.soi_id, device=dev)
        eoi = torch.full((b, 1), self.eoi_id, device=dev)
        image = torch.full((b, n_tok), self.mask_id, dtype=torch.long, device=dev)
        tau = noise_temperature
        records = {}
        sampled = image
        masks = {}
        for s in range(steps):
            seq = torch.cat([cond, soi, image, eoi], dim=1)
            if guidance:
                seq = torch.cat([seq, torch.cat([uncond, soi, image, eoi], dim=1)])
            key = (seq == self.pad_id).cpu().numpy().tobytes()   # the mask depends on the pads only
            if key not in masks:
                masks = {key: additive(self.t2i_mask(seq))}
            hidden, _ = self.forward_hidden(seq, masks[key])
            logits = self.logits(hidden[:, -(n_tok + 1):-1])[..., off:off + cb]
            if guidance:
                logits = (1 + guidance) * logits[:b] - guidance * logits[b:]
            probs = logits.softmax(-1)
            draw = sample_categorical(probs.reshape(-1, cb), generator).view(b, n_tok)
            unknown = image == self.mask_id
            sampled = torch.where(unknown, draw, image - off)
            if s in record:
                records[s] = sampled.clone()
            if s == steps - 1:
                break
            ratio = (s + 1) / steps
            tau = tau * (1 - ratio)
            chosen = probs.gather(-1, sampled[..., None]).squeeze(-1).clamp_min(1e-30).log()
            u = torch.rand(chosen.shape, generator=generator, device=gdev).to(dev)
            gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
            confidence = torch.where(unknown, chosen + tau * gumbel, torch.full_like(chosen, float("inf")))
            length = mask_lengths(n_tok, s, steps, unknown.sum(1, keepdim=True))
            cut = confidence.sort(dim=-1).values.gather(1, length)
            remask = confidence < cut
            image = torch.where(remask, torch.full_like(image, self.mask_id), sampled + off)
        if steps - 1 in record:
            records[steps - 1] = sampled.clone()
        return sampled.clamp(0, cb - 1), records

    # --- images <-> codes ---
    def preprocess(self, image: Image.Image, flip: bool = False) -> torch.Tensor:
        """Short side to the resolution (bicubic), center crop, [-1, 1], [3, R, R]."""
        import numpy as np
        r = self.resolution
        im = image.convert("RGB")
        w, h = im.size
        scale = r / min(w, h)
        im = im.resize((max(r, round(w * scale)), max(r, round(h * scale))), Image.BICUBIC)
        w, h = im.size
        left, top = (w - r) // 2, (h - r) // 2
        im = im.crop((left, top, left + r, top + r))
        if flip:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.asarray(im, dtype=np.float32).copy()).permute(2, 0, 1)
        return x / 127.5 - 1.0

    @torch.no_grad()
    def encode_images(self, images: list[Image.Image], flip: bool = False) -> torch.Tensor:
        """MAGVIT codes [B, N] (0..8191, raster order; add `image_offset` for Show-o ids)."""
        x = torch.stack([self.preprocess(im, flip) for im in images]).to(self.device)
        return self.vq.encode(x).cpu()

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vq.encode(pixels.to(self.device)).cpu()

    @torch.no_grad()
    def decode_pixels(self, codes: torch.Tensor) -> torch.Tensor:
        return self.vq.decode(torch.as_tensor(codes).to(self.device), (self.grid, self.grid)).float()

    @torch.no_grad()
    def decode_images(self, codes: torch.Tensor, chunk_size: int = 8) -> list[Image.Image]:
        """Codes [B, N] -> RGB images: clamp((x + 1) / 2, 0, 1) * 255 as uint8."""
        codes = torch.as_tensor(codes).long().clamp(0, self.codebook_size - 1)
        out = []
        for chunk in codes.split(chunk_size):
            x = self.decode_pixels(chunk)
            arr = ((x + 1) / 2).clamp(0, 1).mul(255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            out.extend(Image.fromarray(a) for a in arr)
        return out


def load_tokenizer(phi_dir: Path, llm_vocab_size: int):
    """The Phi-1.5 tokenizer from a local folder plus Show-o's `[PAD]` and 9 specials at llm_vocab_size.."""
    from transformers import AutoTokenizer

    from unifybench.models.local import quiet_transformers
    try:
        with quiet_transformers():
            tok = AutoTokenizer.from_pretrained(str(phi_dir), local_files_only=True)
    except (OSError, ValueError) as e:
        raise UserError(f"{phi_dir}: cannot load the Phi-1.5 tokenizer ({str(e).splitlines()[0]})") from None
    if len(tok) != llm_vocab_size:
        raise UserError(f"{phi_dir}: tokenizer has {len(tok)} tokens, Show-o's llm_vocab_size is {llm_vocab_size}")
    if EOT not in tok.get_vocab():
        raise UserError(f"{phi_dir}: tokenizer has no {EOT}")
    tok.add_special_tokens({"pad_token": PAD})
    tok.add_tokens(list(SPECIALS), special_tokens=True)
    vocab = tok.get_vocab()
    want = [PAD, *SPECIALS]
    got = [vocab.get(t) for t in want]
    if got != list(range(llm_vocab_size, llm_vocab_size + NUM_NEW_SPECIAL)):
        raise UserError(f"{phi_dir}: Show-o specials landed at {got}, expected {llm_vocab_size}..")
    return tok
