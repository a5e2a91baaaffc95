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
    dtype: str = "auto"  # math and activations: auto -> float32 on CPU, bfloat16 on CUDA; or float32 / bfloat16 / float16
    # How matmul weights are stored. auto -> float16 on CPU when FBGEMM's fp16 GEMM is there (fp32 math, half the
    # bytes read per token: ~1.7x faster decode here), else the same as dtype. float32 keeps exact weights.
    weight_dtype: str = "auto"

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError("max_num_batched_tokens must be >= max_num_seqs (every running sequence needs a token)")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if self.weight_dtype not in ("auto", "float32", "float16"):
            raise ValueError(f"weight_dtype must be auto, float32 or float16, got {self.weight_dtype!r}")

    def torch_dtype(self):
        import torch

        if self.dtype == "auto":
            return torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        return getattr(torch, self.dtype)

    def torch_weight_dtype(self):
        """The weights' dtype; float16 under float32 math means FBGEMM-packed weights (CPU only)."""
        import torch

        from athanor.nn.layers import fbgemm_fp16_available

        math = self.torch_dtype()
        on_cpu_fp32 = self.device == "cpu" and math == torch.float32
        if self.weight_dtype == "float16" and not (on_cpu_fp32 and fbgemm_fp16_available()):
            if on_cpu_fp32:
                raise ValueError("weight_dtype float16 needs FBGEMM's fp16 GEMM, which this torch build lacks")
            raise ValueError("weight_dtype float16 is for CPU with dtype float32; on GPU use dtype float16")
        if self.weight_dtype == "auto":
            return torch.float16 if on_cpu_fp32 and fbgemm_fp16_available() else math
        return torch.float16 if self.weight_dtype == "float16" else math
