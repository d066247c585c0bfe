"""Backbones (loaded from local weights by the libraries' own loaders), tiny factories, concept tokens."""
