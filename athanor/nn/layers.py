"""Small building blocks of the Llama family: RMSNorm, rotary embeddings (incl. Llama 3 scaling), SwiGLU MLP.

Not for attention over the KV cache (attention.py) or the decoder stack (llama.py).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from athanor.errors import UnsupportedArchitectureError


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.cpu_ops = False  # set by build_model: fp32 CPU rows through nn/cpu_ops.c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cpu_ops:
            from athanor.nn.cpu_ops import add_rmsnorm

            return add_rmsnorm(x.reshape(-1, x.shape[-1]).contiguous(), None, self.weight, self.eps).view(x.shape)
        # Computed in fp32 like Hugging Face's LlamaRMSNorm, then cast back: keeps bf16/fp16 runs stable.
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).to(x.dtype)


def rope_inv_freq(head_dim: int, theta: float, scaling: dict | None) -> torch.Tensor:
    """Inverse frequencies (head_dim/2,), with the rope_scaling types our supported checkpoints use."""
    # fp32 throughout, as Hugging Face computes it: bit-identical tables keep greedy parity over long outputs
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    kind = (scaling or {}).get("rope_type") or (scaling or {}).get("type") or "default"
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / scaling["factor"]
    if kind == "llama3":
        return _llama3_inv_freq(inv_freq, scaling)
    raise UnsupportedArchitectureError(f"unsupported rope_scaling type {kind!r}; supported: default, linear, llama3")


def _llama3_inv_freq(inv_freq: torch.Tensor, s: dict) -> torch.Tensor:
    """Llama 3.1 frequency-dependent scaling: long wavelengths slowed by `factor`, short kept, smooth between."""
    factor, low, high = s["factor"], s.get("low_freq_factor", 1.0), s.get("high_freq_factor", 4.0)
    old_ctx = s.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_ctx / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(is_medium, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    """Precomputed cos/sin tables indexed by absolute position; applied in HF's rotate-half layout.

    `sin` is stored sign-folded, [-sin | +sin], so rotate_half(x) * sin == swap_halves(x) * sin_signed:
    the same float operations as Hugging Face's (bit-identical) in fewer torch ops.
    """

    def __init__(self, head_dim: int, max_positions: int, theta: float, scaling: dict | None,
                 lazy: bool = False) -> None:
        """lazy: tables start at 1024 rows and double as positions need them (up to max_positions): a 32k
        context of head_dim 256 would otherwise hold 64 MiB of tables per RoPE base before the first token.
        Rows are the same values either way (one outer product per row)."""
        super().__init__()
        self.inv_freq, self.max_positions = rope_inv_freq(head_dim, theta, scaling), max_positions
        self.lazy = lazy
        self._build(min(max_positions, 1024) if lazy else max_positions)

    def _build(self, n: int) -> None:
        t = torch.arange(n, dtype=torch.float32)
        freqs = torch.outer(t, self.inv_freq).to(getattr(self, "cos", t).device)  # (P, D/2)
        self.register_buffer("cos", torch.cat((freqs, freqs), dim=-1).cos(), persistent=False)  # (P, D)
        self.register_buffer("sin", torch.cat((-freqs.sin(), freqs.sin()), dim=-1), persistent=False)

    def cover(self, positions: torch.Tensor) -> None:
        """Grow a lazy table to hold rows up to `positions.max()` (callers that read `cos`/`sin` directly)."""
        if self.lazy and positions.numel() and int(positions.max()) >= self.cos.shape[0]:
            self._build(min(self.max_positions, max(int(positions.max()) + 1, 2 * self.cos.shape[0])))

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        self.cover(positions)
        # (N, 1, D) each, broadcast over heads
        return self.cos[positions].unsqueeze(1).to(dtype), self.sin[positions].unsqueeze(1).to(dtype)


# Tokens per slice of a long prefill's row-wise work (norms, products, RoPE, residual adds) when its products are
# row-independent block kernels: each op's temporaries are then this many rows, not the whole chunk's. glibc keeps
# freed blocks of every size it was asked for, so the temporaries of a 400-token SmolLM2 prefill held ~19 MiB of
# heap beyond the KV cache (Gemma 3: ~30).
ROW_SLICE = 128


def row_slices(n: int, rows: int) -> list[slice]:
    return [slice(i, min(i + rows, n)) for i in range(0, n, rows)]


def row_slice(*linears) -> int:
    """ROW_SLICE when every Linear multiplies through block kernels (their rows are computed independently of M,
    so slicing keeps the bits), else 0 (BLAS may block a product differently for a different M)."""
    return ROW_SLICE if all(getattr(m, "qweight", None) is not None for m in linears) else 0


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """x (N, heads, D) rotated by position: x*cos + rotate_half(x)*sin, rotate_half as a half swap. Element-wise,
    so a long x is done ROW_SLICE rows at a time into one output (same values, smaller temporaries); `out`: where
    to write it."""
    N, heads, D = x.shape
    if out is None and N <= ROW_SLICE:
        swapped = x.view(N, heads, 2, D // 2).flip(2).view(N, heads, D)  # [x2, x1]
        return x * cos + swapped * sin_signed
    if out is None:
        out = torch.empty((N, heads, D), dtype=torch.result_type(x, cos), device=x.device)
    for s in row_slices(N, ROW_SLICE):
        xs = x[s]
        swapped = xs.reshape(-1, heads, 2, D // 2).flip(2).view(-1, heads, D)
        torch.add(xs * cos[s], swapped * sin_signed[s], out=out[s])
    return out


class Linear(nn.Module):
    """y = x W^T + b with W stored transposed, (in, out), so `x @ weight` streams it row by row.

    On CPU BLAS the batch-1 product reads the weights about twice as fast this way as F.linear's (out, in)
    layout, and decode at batch 1 is bound by reading the weights. Loaders still hand over (out, in) tensors.
    `pack_fp16()` swaps in FBGEMM's fp16-weight GEMM (fp32 activations and accumulation): half the bytes.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))  # (in, out)
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.packed: torch.Tensor | None = None  # FBGEMM fp16 matrix, replaces `weight` when set
        self.qweight = None  # athanor.nn.quant.QuantizedWeight (q4_1 / q8_0 blocks), replaces `weight` when set

    def pack_fp16(self) -> None:
        self.packed = pack_fp16(self.weight.detach().t())
        self.packed_bytes = self.weight.numel() * 2  # FBGEMM's packed tensor does not report its size
        self.weight = nn.Parameter(torch.empty(0), requires_grad=False)  # free the fp32 copy

    def quantize(self, kind: str) -> None:
        """GGUF-style block weights read by athanor's AVX2 kernels (nn/quant.py); fp32 activations in and out."""
        from athanor.nn.quant import QuantizedWeight

        self.qweight = QuantizedWeight.quantize(self.weight.detach().t(), kind)  # (out, in) blocks
        self.weight = nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.qweight is not None:
            return _qmatmul(x, self.qweight, self.bias)
        if self.packed is not None:
            return torch.fbgemm_linear_fp16_weight_fp32_activation(x, self.packed, self.bias)
        return x @ self.weight if self.bias is None else torch.addmm(self.bias, x, self.weight)


def _qmatmul(x: torch.Tensor, qweight, bias: torch.Tensor | None) -> torch.Tensor:
    """Either block format: nn/quant.QuantizedWeight (re-packed Q4_1/Q8_0) or nn/gguf_matmul.BlockParts (the
    file's own blocks). Threads: torch.get_num_threads() (results identical for any count)."""
    if hasattr(qweight, "matmul"):
        return qweight.matmul(x.reshape(-1, x.shape[-1]), bias).view(*x.shape[:-1], -1)
    from athanor.nn.quant import qmatmul

    return qmatmul(x, qweight, bias)


@functools.cache  # probed once per process: it runs a tiny GEMM
def fbgemm_fp16_available() -> bool:
    """FBGEMM's fp16 GEMM: in x86 CPU builds of torch (deprecated upstream, so checked, not assumed)."""
    import warnings

    if not (hasattr(torch, "fbgemm_pack_gemm_matrix_fp16") and torch.backends.cpu.get_cpu_capability() != "DEFAULT"):
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.fbgemm_linear_fp16_weight_fp32_activation(
                torch.ones(1, 8), torch.fbgemm_pack_gemm_matrix_fp16(torch.ones(8, 8)), None)
        return True
    except RuntimeError:
        return False


def pack_fp16(weight_out_in: torch.Tensor) -> torch.Tensor:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "deprecated": still the fastest CPU GEMM here (benchmarks/RESULTS.md)
        return torch.fbgemm_pack_gemm_matrix_fp16(weight_out_in.float().contiguous())


class Embedding(nn.Module):
    """Token embedding table (V, C). Not nn.Embedding: its random init on the meta device imports torch's
    compiler stack (~1 s of cold start) for weights we overwrite anyway."""

    def __init__(self, vocab: int, hidden: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab, hidden))
        # nn/gguf_matmul.GGUFWeight (the file's blocks) or nn/quant.QuantizedWeight (re-packed Q4_1/Q8_0, shared
        # with a tied head): the table stays in blocks, rows decoded on lookup
        self.qweight = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.qweight is not None:
            from athanor.nn.gguf_matmul import get_rows

            rows = self.qweight.get_rows(ids) if hasattr(self.qweight, "get_rows") else get_rows(self.qweight, ids)
            return rows.view(*ids.shape, -1)
        return F.embedding(ids, self.weight)


class LMHead(nn.Module):
    """Vocabulary projection. Keeps the (V, C) matrix (shared with the embedding when tied) and a transposed
    copy: batch-1 decode reads the copy (faster gemv), batched rows use the original (faster gemm).
    With `pack_fp16()` both are replaced by one FBGEMM fp16 matrix (faster than either)."""

    def __init__(self, hidden: int, vocab: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab, hidden))  # (V, C)
        self.vocab = vocab  # the weight may be emptied when the head multiplies a file's blocks (`qweight`)
        self.register_buffer("weight_t", torch.empty(hidden, vocab), persistent=False)  # (C, V)
        self.packed: torch.Tensor | None = None
        self.qweight = None

    def refresh(self) -> None:
        """Rebuild the transposed copy after the weight was loaded, moved or cast."""
        self.weight_t = self.weight.detach().t().contiguous()

    def pack_fp16(self) -> None:
        self.packed = pack_fp16(self.weight.detach())  # the (V, C) weight stays: it may be the embedding
        self.packed_bytes = self.weight.numel() * 2
        self.weight_t = torch.empty(0)

    def quantize(self, kind: str) -> None:
        from athanor.nn.quant import QuantizedWeight

        self.qweight = QuantizedWeight.quantize(self.weight.detach(), kind)  # the float weight stays (embedding)
        self.weight_t = torch.empty(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 0:  # a mid-prompt chunk needs no logits (block-format heads refuse zero rows)
            return x.new_empty(0, self.vocab)
        if self.qweight is not None:
            return _qmatmul(x, self.qweight, None)
        if self.packed is not None:
            return torch.fbgemm_linear_fp16_weight_fp32_activation(x, self.packed, None)
        return x @ self.weight_t if x.shape[0] == 1 else F.linear(x, self.weight)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)) with gate and up fused into one matmul."""

    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.gate_up_proj = Linear(hidden, 2 * intermediate)
        self.down_proj = Linear(intermediate, hidden)
        self.cpu_ops = False  # set by build_model: silu(gate) * up through nn/cpu_ops.c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cpu_ops:
            from athanor.nn.cpu_ops import silu_mul

            return self.down_proj(silu_mul(self.gate_up_proj(x)))
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)
