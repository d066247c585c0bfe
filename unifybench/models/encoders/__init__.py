"""The scoring encoders the evaluators (and retrieval) embed images and text with: CLIP, DINO, face."""
