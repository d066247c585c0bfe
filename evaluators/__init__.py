"""Metric families. Each evaluator is one class registered by name in `unifybench.registry`."""
