"""LLaVA-1.5: the backbone (transformers' LLaVA, llava_v1 conversation), its chat adapter and the tiny random
checkpoint (imported by `unifybench.models.weights` only)."""
