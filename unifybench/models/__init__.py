"""Backbones (loaded from local weights by the libraries' own loaders), tiny factories, concept tokens."""


def torch_dtype(name: str):
    """The run's `--dtype` name (float32 | bfloat16 | float16) as a torch dtype (torch imported on use)."""
    import torch
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
