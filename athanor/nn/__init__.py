"""Our decoder family in plain PyTorch (no transformers at inference time)."""
