"""Show-o: the backbone (Phi-1.5 + MAGVIT-v2, our own port), its chat adapter (`chat_ids` format) and the tiny
random checkpoint (imported by `unifybench.models.weights` only)."""
