"""Benchmark loaders and the bundled mini benchmark."""
