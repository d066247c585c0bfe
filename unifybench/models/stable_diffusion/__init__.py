"""Stable Diffusion (diffusers): the pipeline loader and the tiny random checkpoint (imported by
`unifybench.models.weights` only)."""
