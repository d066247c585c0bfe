"""Forgetting evaluators: general benchmarks (MMLU, POPE, MMBench) run on the base and personalized model."""
