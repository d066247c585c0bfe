"""Qwen2.5-VL-Instruct: the backbone (its own chat template) and the tiny random checkpoint (imported by
`unifybench.models.weights` only)."""
