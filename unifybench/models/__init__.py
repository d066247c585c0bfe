"""Backbones, one folder per family (`chameleon/`, `showo/`, `llava/`, `qwen_vl/`, `stable_diffusion/`), the
scoring encoders (`encoders/`), and the shared layer: the weights resolver (`weights`), the declared
backbone contract (`contract`), concept tokens, local loading (`local`) and the tiny-model cache."""

_DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
                "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def torch_dtype(dtype):
    """The one dtype converter: a `--dtype` name (float32 | bfloat16 | float16, or fp32/fp16/half/bf16) or a
    torch dtype, as a torch dtype (torch imported on use); an unknown name is a one-line UserError."""
    import torch
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPE_NAMES:
        from unifybench.errors import UserError
        raise UserError(f"unknown dtype {dtype!r} (known: float32, float16, bfloat16)")
    return getattr(torch, _DTYPE_NAMES[dtype])
