"""The LLaVA-NeXT (LLaVA-1.6) family: transformers' `LlavaNextForConditionalGeneration`, anyres images."""
