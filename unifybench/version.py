"""The package version: one place, read by the package root and by every results document and cache key."""
__version__ = "0.1.0"
