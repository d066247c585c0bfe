"""The Chameleon/Anole VQGAN decoder (codebook latents -> pixels), which stock transformers does not ship.

transformers' `ChameleonVQVAE` has only the encoder side. Anole checkpoints converted to the HF layout
(`leloy/Anole-7b-v0.1-hf`) also carry the original taming-transformers style decoder beside the encoder:
`<prefix>decoder.{conv_in, mid.block_1, mid.attn_1, mid.block_2, up.{i}.block.{j}, up.{i}.attn.{j},
up.{i}.upsample.conv, norm_out, conv_out}` and `<prefix>post_quant_conv`, where `<prefix>` is wherever the
encoder lives (`model.vqmodel.` in transformers 5.x). The module below reproduces exactly that parameter
layout so the weights load by name, read with `safetensors.safe_open` only (never pickle).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import nn

from unifybench.errors import UserError
from unifybench.models.local import checkpoint_files

# Suffix of one encoder tensor that every Chameleon VQ checkpoint has; it locates the VQ model's prefix.
_ENCODER_PROBE = "encoder.conv_in.weight"


def _norm(channels: int) -> nn.GroupNorm:
    # The VQGAN uses 32 groups everywhere, eps 1e-6 (same as transformers' encoder blocks).
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """norm-swish-conv twice, plus a 1x1 `nin_shortcut` when the channel count changes."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1-conv projections (q, k, v, proj_out)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        # [B, C, H, W] -> [B, 1, HW, C]: one head over the spatial positions, scale 1/sqrt(C).
        q, k, v = (t.reshape(b, 1, c, h * w).transpose(-1, -2) for t in (self.q(y), self.k(y), self.v(y)))
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(out.transpose(-1, -2).reshape(b, c, h, w))


class Upsample(nn.Module):
    """Nearest-neighbour 2x, then a 3x3 conv (key `upsample.conv`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Decoder(nn.Module):
    """Mirror of the encoder: conv_in, mid (resnet, attn, resnet), up levels, norm_out, conv_out.

    `up[i]` is stored at its resolution level i (0 = full resolution) but run from the coarsest level
    down, each level with num_res_blocks + 1 resnets, as in the original checkpoint layout.
    """

    def __init__(self, config):
        super().__init__()
        mults = tuple(config.channel_multiplier)
        self.num_levels = len(mults)
        ch = config.base_channels
        attn_res = set(config.attn_resolutions or ()) if config.attn_type == "vanilla" else set()
        res = config.resolution // 2 ** (self.num_levels - 1)
        block_in = ch * mults[-1]

        self.conv_in = nn.Conv2d(config.latent_channels, block_in, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, config.dropout)
        self.mid.attn_1 = AttnBlock(block_in) if config.attn_type == "vanilla" else nn.Identity()
        self.mid.block_2 = ResnetBlock(block_in, block_in, config.dropout)

        levels: list[nn.Module] = [None] * self.num_levels  # type: ignore[list-item]
        for i in reversed(range(self.num_levels)):
            level = nn.Module()
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            block_out = ch * mults[i]
            for _ in range(config.num_res_blocks + 1):
                level.block.append(ResnetBlock(block_in, block_out, config.dropout))
                block_in = block_out
                if res in attn_res:
                    level.attn.append(AttnBlock(block_in))
            if i != 0:
                level.upsample = Upsample(block_in)
                res *= 2
            levels[i] = level
        self.up = nn.ModuleList(levels)

        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, getattr(config, "out_channels", 3), 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for i in reversed(range(self.num_levels)):
            level = self.up[i]
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn):
                    h = level.attn[j](h)
            if i != 0:
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VQGANDecoder(nn.Module):
    """`post_quant_conv` + `decoder`: codebook embeddings [B, embed_dim, h, w] -> pixels [B, 3, H, W] in ~[-1, 1].

    Its state-dict keys equal the checkpoint keys with the VQ model prefix removed.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.latent_channels, 1)
        self.decoder = Decoder(config)

    def forward(self, quant: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(quant))

    @staticmethod
    def checkpoint_prefix(keys) -> str:
        """The VQ model prefix in a checkpoint, found from where its encoder lives (e.g. `model.vqmodel.`)."""
        hits = sorted(k[: -len(_ENCODER_PROBE)] for k in keys if k.endswith(_ENCODER_PROBE) and "vqmodel" in k)
        if not hits:
            raise KeyError(_ENCODER_PROBE)
        return hits[0]

    @classmethod
    def from_checkpoint(cls, path: str | Path, config) -> "VQGANDecoder":
        """Load only the decoder and post_quant_conv tensors from a checkpoint directory or safetensors file."""
        files = checkpoint_files(path)
        key_to_file: dict[str, Path] = {}
        for file in files:
            try:
                with safe_open(str(file), framework="pt") as f:
                    for key in f.keys():
                        key_to_file[key] = file
            except (SafetensorError, OSError) as e:
                raise UserError(f"{file}: cannot read safetensors file ({e})") from e
        names = ", ".join(str(f) for f in files)
        try:
            prefix = cls.checkpoint_prefix(key_to_file)
        except KeyError:
            raise UserError(f"{names}: no Chameleon VQ model found (no '*vqmodel.{_ENCODER_PROBE}' key)") from None

        module = cls(config)
        expected = module.state_dict()
        wanted = {prefix + name: name for name in expected}
        missing = sorted(k for k in wanted if k not in key_to_file)
        if missing:
            raise UserError(
                f"{names}: {len(missing)} VQGAN decoder tensors missing (e.g. '{missing[0]}'); this checkpoint has no "
                f"image decoder (an Anole checkpoint such as leloy/Anole-7b-v0.1-hf has one)")
        extra = sorted(k for k in key_to_file if k.startswith((prefix + "decoder.", prefix + "post_quant_conv."))
                       and k not in wanted)
        if extra:
            raise UserError(f"{key_to_file[extra[0]]}: unexpected VQGAN decoder tensor '{extra[0]}' (config mismatch?)")

        state: dict[str, torch.Tensor] = {}
        for file in sorted({key_to_file[k] for k in wanted}):
            with safe_open(str(file), framework="pt") as f:
                for key in wanted:
                    if key_to_file[key] == file:
                        state[wanted[key]] = f.get_tensor(key)
        for name, tensor in state.items():
            if tensor.shape != expected[name].shape:
                raise UserError(f"{key_to_file[prefix + name]}: '{prefix + name}' has shape {tuple(tensor.shape)}, "
                                f"the VQ config implies {tuple(expected[name].shape)}")
        module.load_state_dict(state, strict=True)
        return module.eval()
