"""Personalization methods: train concept tokens for one concept, then answer and generate."""
