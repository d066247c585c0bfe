"""UnifyBench: benchmark and evaluation suite for personalized multimodal models."""
__version__ = "0.1.0"
