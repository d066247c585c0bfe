"""MAGVIT-v2 image tokenizer as used by Show-o (`showlab/magvitv2`): encoder, lookup-free quantizer, decoder.

Written from the structural facts in the project notes (section 5.7), not from the reference code:
- encoder: conv_in 3->ch, 5 levels with channel multipliers (1,2,2,4,4) and (4,3,4,3,4) residual blocks,
  a stride-2 3x3 conv (padded right/bottom by one) after every level but the last (x16 in total), no attention
  inside the levels, a mid ResBlock-Attn-ResBlock, GroupNorm + swish, conv_out -> 13 channels, a 1x1
  `quant_conv`;
- lookup-free quantizer: the sign of each of the 13 channels (> 0 -> +1, else -1); code = sum over channels
  of bit * 2^(12 - c), channel 0 the most significant bit, 8192 codes; persistent buffers `embedding`
  [8192, 13] (the +-1 table) and `power_vals` [13];
- decoder: 1x1 `post_quant_conv`, conv_in 13 -> 512, mid ResBlock-Attn-ResBlock, levels 4..0 with multipliers
  (1,1,2,2,4) and (4,4,3,4,3) blocks by level, nearest x2 upsampling + 3x3 conv between levels, GroupNorm +
  swish, conv_out -> 3.

Parameter names follow the taming-VQGAN convention (`down.{i}.block.{j}`, `down.{i}.downsample.conv`,
`mid.block_1`, `mid.attn_1`, `mid.block_2`, `up.{i}.block.{j}`, `up.{i}.upsample.conv`, `norm_out`,
`conv_out`; ResBlock `norm1 conv1 norm2 conv2 nin_shortcut`; AttnBlock `norm q k v proj_out`). The full
key/shape list was checked against the module layout of the public code (showlab/Show-o
models/modeling_magvitv2.py and common_modules.py; see tests/test_showo.py), and the loader still names
any missing/unexpected key, so a checkpoint of another layout fails at once with the key.

A checkpoint folder holds `config.json` and a safetensors weight file. Pickled `.bin` files are refused.
The tiny test model stores its (small) architecture under the `unifybench_arch` key of config.json; a real
checkpoint has none and gets the defaults above.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from unifybench.errors import UserError

WEIGHT_NAMES = ("pytorch_model.safetensors", "diffusion_pytorch_model.safetensors", "model.safetensors")


@dataclass
class MagvitConfig:
    ch: int = 128
    z_channels: int = 13                      # = log2(codebook size)
    enc_ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4)
    enc_num_res_blocks: tuple[int, ...] = (4, 3, 4, 3, 4)
    dec_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    dec_num_res_blocks: tuple[int, ...] = (4, 4, 3, 4, 3)
    num_groups: int = 32
    eps: float = 1e-6

    @property
    def codebook_size(self) -> int:
        return 2 ** self.z_channels

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.enc_ch_mult) - 1)

    @classmethod
    def from_dict(cls, d: dict) -> "MagvitConfig":
        known = {f for f in cls.__dataclass_fields__}
        vals = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        return cls(**vals)


def _norm(c: int, cfg: MagvitConfig) -> nn.GroupNorm:
    return nn.GroupNorm(cfg.num_groups, c, eps=cfg.eps, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, cfg: MagvitConfig):
        super().__init__()
        self.norm1 = _norm(cin, cfg)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = _norm(cout, cfg)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))  # dropout 0 at inference
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1 projections, scale c^-1/2."""

    def __init__(self, c: int, cfg: MagvitConfig):
        super().__init__()
        self.norm = _norm(c, cfg)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        b, c, h, w = x.shape
        y = self.norm(x)
        q = self.q(y).flatten(2).transpose(1, 2)           # [B, HW, C]
        k = self.k(y).flatten(2)                           # [B, C, HW]
        v = self.v(y).flatten(2).transpose(1, 2)
        attn = torch.softmax((q @ k) * c ** -0.5, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    def __init__(self, c: int, cfg: MagvitConfig):
        super().__init__()
        self.block_1 = ResnetBlock(c, c, cfg)
        self.attn_1 = AttnBlock(c, cfg)
        self.block_2 = ResnetBlock(c, c, cfg)

    def forward(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, cfg: MagvitConfig):
        super().__init__()
        self.conv_in = nn.Conv2d(3, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        cin = cfg.ch
        n = len(cfg.enc_ch_mult)
        for i, (mult, nblocks) in enumerate(zip(cfg.enc_ch_mult, cfg.enc_num_res_blocks)):
            level = nn.Module()
            cout = cfg.ch * mult
            level.block = nn.ModuleList([ResnetBlock(cin if j == 0 else cout, cout, cfg) for j in range(nblocks)])
            if i != n - 1:
                level.downsample = Downsample(cout)
            cin = cout
            self.down.append(level)
        self.mid = _Mid(cin, cfg)
        self.norm_out = _norm(cin, cfg)
        self.conv_out = nn.Conv2d(cin, cfg.z_channels, 3, padding=1)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 1)

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.quant_conv(self.conv_out(F.silu(self.norm_out(h))))


class Decoder(nn.Module):
    def __init__(self, cfg: MagvitConfig):
        super().__init__()
        n = len(cfg.dec_ch_mult)
        cin = cfg.ch * cfg.dec_ch_mult[-1]
        self.post_quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 1)
        self.conv_in = nn.Conv2d(cfg.z_channels, cin, 3, padding=1)
        self.mid = _Mid(cin, cfg)
        levels: list[nn.Module] = [None] * n  # type: ignore[list-item]
        for i in reversed(range(n)):  # built from the lowest resolution up, stored by level index
            level = nn.Module()
            cout = cfg.ch * cfg.dec_ch_mult[i]
            level.block = nn.ModuleList([ResnetBlock(cin if j == 0 else cout, cout, cfg)
                                         for j in range(cfg.dec_num_res_blocks[i])])
            if i != 0:
                level.upsample = Upsample(cout)
            cin = cout
            levels[i] = level
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(cin, cfg)
        self.conv_out = nn.Conv2d(cin, 3, 3, padding=1)

    def forward(self, z):
        h = self.mid(self.conv_in(self.post_quant_conv(z)))
        for i in reversed(range(len(self.up))):
            level = self.up[i]
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class LFQuantizer(nn.Module):
    """Lookup-free quantization: sign bits, channel 0 the most significant."""

    def __init__(self, bits: int = 13):
        super().__init__()
        self.bits = bits
        power = 2 ** torch.arange(bits - 1, -1, -1, dtype=torch.long)   # [2^(bits-1), ..., 1]
        codes = torch.arange(2 ** bits, dtype=torch.long)
        table = ((codes[:, None] // power[None]) % 2).float() * 2 - 1   # bit c of code <-> channel c
        self.register_buffer("embedding", table, persistent=True)
        self.register_buffer("power_vals", power, persistent=True)   # int64, as in the public file

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """[B, bits, H, W] latents -> [B, H*W] codes in raster order."""
        bits = (z > 0).long()
        idx = (bits * self.power_vals.long().view(1, -1, 1, 1)).sum(1)   # a float copy loads too
        return idx.flatten(1)

    def lookup(self, codes: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """[B, H*W] codes -> [B, bits, H, W] +-1 latents."""
        q = self.embedding[codes]                                      # [B, HW, bits]
        return q.view(codes.shape[0], grid[0], grid[1], self.bits).permute(0, 3, 1, 2).contiguous()


class MAGVITv2(nn.Module):
    def __init__(self, cfg: MagvitConfig | None = None):
        super().__init__()
        self.cfg = cfg or MagvitConfig()
        self.encoder = Encoder(self.cfg)
        self.decoder = Decoder(self.cfg)
        self.quantize = LFQuantizer(self.cfg.z_channels)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1], [B, 3, H, W] -> codes [B, H/16 * W/16] (raster order, 0..8191)."""
        dtype = next(self.parameters()).dtype
        return self.quantize.codes(self.encoder(pixels.to(dtype)))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """Codes [B, N] -> pixels [B, 3, H, W], roughly in [-1, 1]."""
        codes = codes.long().clamp(0, self.cfg.codebook_size - 1)
        if grid is None:
            side = int(round(codes.shape[1] ** 0.5))
            if side * side != codes.shape[1]:
                raise ValueError(f"{codes.shape[1]} codes are not a square grid; pass grid=(h, w)")
            grid = (side, side)
        dtype = next(self.parameters()).dtype
        return self.decoder(self.quantize.lookup(codes, grid).to(dtype))

    # --- checkpoints ---
    def save(self, folder: str | Path, arch_in_config: bool = True) -> None:
        """The public layout: config.json + pytorch_model.safetensors."""
        from safetensors.torch import save_file
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"_class_name": "MAGVITv2"}
        if arch_in_config:
            config["unifybench_arch"] = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.cfg).items()}
        (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                  str(folder / WEIGHT_NAMES[0]), metadata={"format": "pt"})

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32) -> "MAGVITv2":
        folder = Path(folder)
        cfg = MagvitConfig()
        config_file = folder / "config.json"
        if config_file.is_file():
            try:
                raw = json.loads(config_file.read_text())
            except ValueError as e:
                raise UserError(f"{config_file}: not JSON ({e})") from None
            cfg = MagvitConfig.from_dict(raw.get("unifybench_arch", {}))
        with torch.device("meta"):
            model = cls(cfg)
        path = weight_file(folder, "MAGVIT-v2")
        state = load_safetensors_strict(path, model, what="MAGVIT-v2")
        model.load_state_dict(state, strict=True, assign=True)
        model.weight_path = path
        return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def weight_file(folder: Path, what: str = "model") -> Path:
    """The safetensors weight file of a diffusers-style folder, header checked; pickled files are refused,
    never opened."""
    from unifybench.models.safe_weights import check_safetensors, refuse_pickle_only
    folder = Path(folder)
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return check_safetensors(folder / name, what)
    refuse_pickle_only(folder, what, WEIGHT_NAMES[0])
    raise UserError(f"{folder}: no weight file ({' or '.join(WEIGHT_NAMES)})")


def load_safetensors_strict(path: Path, model: nn.Module, what: str, rename=None) -> dict[str, torch.Tensor]:
    """All tensors of `path`, checked against `model`'s state dict: same keys, same shapes."""
    from safetensors import SafetensorError, safe_open
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:
        with safe_open(str(path), framework="pt") as f:
            state = {(rename(k) if rename else k): f.get_tensor(k) for k in f.keys()}
    except (OSError, SafetensorError) as e:
        raise UserError(f"{path}: unreadable safetensors file ({e})") from None
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        raise UserError(f"{path}: {what} keys do not match: " + "; ".join(parts))
    bad = [(k, tuple(state[k].shape), expected[k]) for k in expected if tuple(state[k].shape) != expected[k]]
    if bad:
        k, got, want = bad[0]
        raise UserError(f"{path}: {len(bad)} {what} tensors have the wrong shape (e.g. {k}: {got}, expected {want})")
    return state
