"""EngineConfig: sizes of the batch, the KV cache and the device the engine runs on.

Not for sampling (sampling_params.py) or model shape (nn/config.py).
"""

from __future__ import annotations

from dataclasses import dataclass

QUANT_KINDS = ("q4_1", "q8_0")  # block formats the CPU kernels read (athanor/nn/quant.py)
WEIGHT_DTYPES = ("auto", "float32", "float16", *QUANT_KINDS, "gguf")
KV_CACHE_TYPES = ("auto", "f32", "f16", "q8_0")  # what --kv-cache-type takes (q8_0: nn/kv_quant.py)


@dataclass
class EngineConfig:
    max_num_seqs: int = 32  # sequences in the running batch at once
    max_num_batched_tokens: int = 2048  # token budget per step: long prompts are prefilled in chunks of this
    block_size: int = 16  # tokens per KV-cache block
    num_kvcache_blocks: int = 0  # 0 -> derived from kv_cache_bytes
    kv_cache_bytes: int = 512 * 2**20  # KV-cache budget used when num_kvcache_blocks is 0: a cap, allocated as used
    max_model_len: int = 0  # 0 -> the model's context length (capped by what the cache holds)
    enable_prefix_caching: bool = True
    # the KV pool may grow this far to keep finished prompts cached before it evicts one (engine/block_manager.py);
    # within kv_cache_bytes. 0: evict before growing (the pool holds only what running sequences need)
    prefix_cache_bytes: int = 64 * 2**20
    device: str = "cpu"  # "cpu", "cuda", "cuda:1" ...
    dtype: str = "auto"  # math and activations: auto -> float32 on CPU, bfloat16 on CUDA; or float32 / bfloat16 / float16
    # How matmul weights are stored (CPU, float32 math). auto -> a quantized GGUF keeps its own blocks (like
    # `gguf`) when athanor's kernels compile here, anything else float16 via FBGEMM's fp16 GEMM (half the bytes per
    # token), else the same as dtype. float32 / float16: those. q4_1 / q8_0: GGUF-style blocks read by the AVX2
    # kernels (nn/quant.py) with fp32 activations (weights dequantized in registers: float-path answers, batched
    # == alone bit for bit). gguf: the file's own block formats with int8 activations (nn/gguf_matmul.py), as
    # llama.cpp computes them (batched == alone bit for bit too).
    weight_dtype: str = "auto"
    # KV-cache storage: auto -> the math dtype; f16 / f32; q8_0 -> int8 with a float16 scale per 32 values
    # (nn/kv_quant.py, llama.cpp's --cache-type-k/v q8_0, Ollama's OLLAMA_KV_CACHE_TYPE)
    kv_cache_type: str = "auto"

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.prefix_cache_bytes < 0:
            raise ValueError(f"prefix_cache_bytes must be >= 0, got {self.prefix_cache_bytes}")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError("max_num_batched_tokens must be >= max_num_seqs (every running sequence needs a token)")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if self.kv_cache_type not in KV_CACHE_TYPES:
            raise ValueError(f"kv_cache_type must be one of {', '.join(KV_CACHE_TYPES)}, got {self.kv_cache_type!r}")
        if self.weight_dtype not in WEIGHT_DTYPES:
            raise ValueError(f"weight_dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {self.weight_dtype!r}")

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
        if self.weight_dtype in ("auto", "gguf", *QUANT_KINDS):  # quantized plans: for matmuls the plan leaves out
            return torch.float16 if on_cpu_fp32 and fbgemm_fp16_available() else math
        return torch.float16 if self.weight_dtype == "float16" else math

    def quant_plan(self, file_quantization: str | None) -> dict[str, str] | None:
        """Which matmuls read block-quantized weights ({"linear": kind, "lm_head": kind}), or None.

        q4_1 / q8_0: the projections in that format, the LM head q8_0, multiplied with fp32 activations (nn/quant.py:
        a Q4_1/Q8_0 file's blocks re-pack into it bit for bit; answers of the float path). gguf: a quantized file
        keeps its own blocks ({"blocks": True}: nn/gguf_matmul.py, activations quantized to int8 per block as
        llama.cpp does, weights a view of the file). auto, where the kernels compile: a Q4_1/Q8_0 file as q4_1 /
        q8_0 above (the same perplexity as gguf's int8 arithmetic, and the float path's greedy answers), any other
        quantized file (K-quants, IQ4, Q5_0, Q4_0) as gguf. A float file keeps the float path. CPU, float32 math.
        """
        import torch

        if self.weight_dtype not in ("auto", "gguf", *QUANT_KINDS):
            return None
        from athanor.nn import quant

        on_cpu_fp32 = self.device == "cpu" and self.torch_dtype() == torch.float32
        from athanor.nn import gguf_matmul

        fq = (file_quantization or "").upper()
        exact = fq in ("Q4_1", "Q8_0")  # blocks that re-pack bit for bit into nn/quant.py's kernels
        # K-quants, IQ4, Q5_0, Q4_0 (which has no re-pack: it went float and was re-quantized to q4_1): own blocks
        native = bool(fq) and fq not in ("F32", "F16", "BF16") and not exact
        if self.weight_dtype == "auto":  # the file's blocks where they can run, else the float path, quietly
            if exact:  # float activations: the float path's answers (gguf: llama.cpp's int8 arithmetic instead)
                return self._file_plan(file_quantization) if on_cpu_fp32 and quant.available() else None
            return {"blocks": True} if native and on_cpu_fp32 and gguf_matmul.available() else None
        if not on_cpu_fp32:
            raise ValueError(f"weight_dtype {self.weight_dtype} is for CPU with dtype float32")
        if not quant.available():
            raise ValueError(f"weight_dtype {self.weight_dtype}: the quantized kernels are unavailable here "
                             f"({quant.unavailable_reason()})")
        if self.weight_dtype in QUANT_KINDS:
            return {"linear": self.weight_dtype, "lm_head": "q8_0"}
        plan = self._file_plan(file_quantization)
        # gguf: a quantized file (a plan) keeps its blocks (nn/gguf_matmul.py, int8 activations as llama.cpp: Q4_1
        # and Q8_0 too); matrices without a block kernel are re-packed as the plan says
        return {"blocks": True, **plan} if plan is not None and gguf_matmul.available() else plan

    @staticmethod
    def _file_plan(file_quantization: str | None) -> dict[str, str] | None:
        fq = (file_quantization or "").upper()
        if not fq or fq in ("F32", "F16", "BF16"):
            return None
        return {"linear": "q4_1" if fq.startswith(("Q2", "Q3", "Q4", "IQ")) else "q8_0", "lm_head": "q8_0"}
