"""EngineConfig: sizes of the batch, the KV cache and the device the engine runs on.

Not for sampling (sampling_params.py) or model shape (nn/config.py).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EngineConfig:
    max_num_seqs: int = 32  # sequences in the running batch at once
    max_num_batched_tokens: int = 2048  # token budget per step: long prompts are prefilled in chunks of this
    block_size: int = 16  # tokens per KV-cache block
    num_kvcache_blocks: int = 0  # 0 -> derived from kv_cache_bytes
    kv_cache_bytes: int = 512 * 2**20  # KV-cache budget used when num_kvcache_blocks is 0
    max_model_len: int = 0  # 0 -> the model's context length (capped by what the cache holds)
    enable_prefix_caching: bool = True
    device: str = "cpu"  # "cpu", "cuda", "cuda:1" ...
    dtype: str = "auto"  # auto -> float32 on CPU, bfloat16 on CUDA; or float32 / bfloat16 / float16

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError("max_num_batched_tokens must be >= max_num_seqs (every running sequence needs a token)")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")

    def torch_dtype(self):
        import torch

        if self.dtype == "auto":
            return torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        return getattr(torch, self.dtype)
