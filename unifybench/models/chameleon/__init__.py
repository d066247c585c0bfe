"""Chameleon/Anole: the backbone (transformers' Chameleon + the Anole VQGAN decoder), its chat adapter and the
tiny random checkpoint (imported by `unifybench.models.weights` only)."""
