"""Fused small operations of a Llama step on the CPU in fp32, in C (nn/cpu_ops.c): residual add + RMSNorm,
SiLU-and-multiply, and decode attention over the paged KV cache (RoPE, cache write and attention in one call).

Why: with the matmuls in athanor's quantized kernels (nn/quant.py), half of a SmolLM2 decode step on a 2-core
CPU was PyTorch running small ops one at a time: per layer ~15 ops of 2-60 µs each (RMSNorm alone is five ATen
ops, ~45 µs), plus SDPA's OpenMP region, which stalls whenever the other core is busy. Here each fused op is one
ctypes call (the GIL is released) and decode attention reads the cache in place through the block table
instead of gathering it first.

Numerics: RMSNorm and SiLU follow Hugging Face's formulas in fp32 (sum of squares in double; e^x by a
polynomial within ~2 ulp), RoPE and the residual add are the same float operations as the PyTorch path (same
bits), attention is an exact softmax in fp32. Every row is computed by one thread with the same operations
whatever the batch, so a request's logits do not depend on what it is batched with.

Used by LlamaModel when `build_model` enables it: CPU, fp32 math, kernels available, `ATHANOR_CPU_OPS` not "0".
Not for: GPUs, other dtypes, autograd, or prefill attention (PyTorch's blocked SDPA is faster on long prompts).
"""

from __future__ import annotations

import ctypes
import functools
import weakref
import os
from pathlib import Path

import torch

from athanor import cbuild

_SOURCE = Path(__file__).with_name("cpu_ops.c")


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str | None]:
    if os.environ.get("ATHANOR_CPU_OPS", "1") == "0":
        return None, "disabled by ATHANOR_CPU_OPS=0"
    lib, reason = cbuild.load(_SOURCE)
    if lib is None:
        return None, reason
    L, P, F, I = ctypes.c_long, ctypes.c_void_p, ctypes.c_float, ctypes.c_int
    lib.atho_add_rmsnorm.argtypes = [P, P, P, F, P, L, L, I]
    lib.atho_add_rmsnorm.restype = None
    lib.atho_silu_mul.argtypes = [P, P, L, L, I]
    lib.atho_silu_mul.restype = None
    lib.atho_decode_attention.argtypes = [P, L, P, P, P, P, L, L, P, P, L, L, L, L, L, F, P, I]
    lib.atho_decode_attention.restype = I
    return lib, None


def available() -> bool:
    return _load()[0] is not None


def unavailable_reason() -> str | None:
    return _load()[1]


def supports(hidden_size: int, intermediate_size: int, head_dim: int) -> bool:
    """The kernels work on whole 8-float lanes."""
    return hidden_size % 8 == 0 and intermediate_size % 8 == 0 and head_dim % 8 == 0 and head_dim <= 1024


def _f32(t: torch.Tensor) -> bool:
    return t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous()


def add_rmsnorm(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float,
                out: torch.Tensor | None = None, check: bool = True) -> torch.Tensor:
    """x (M, C): x += residual in place (when given), then return weight * x / sqrt(mean(x^2) + eps).
    check=False skips the argument checks (the decode loop checks once per step what varies)."""
    if check:
        assert _f32(x) and _f32(weight) and weight.shape == x.shape[1:]
        assert residual is None or (_f32(residual) and residual.shape == x.shape)
        assert out is None or (_f32(out) and out.shape == x.shape)
    out = torch.empty_like(x) if out is None else out
    M, C = x.shape
    _load()[0].atho_add_rmsnorm(x.data_ptr(), residual.data_ptr() if residual is not None else None,
                                weight.data_ptr(), eps, out.data_ptr(), M, C, torch.get_num_threads())
    return out


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """gate_up (M, 2I) = [gate | up] -> (M, I) silu(gate) * up."""
    assert _f32(gate_up)
    M, I2 = gate_up.shape
    out = torch.empty((M, I2 // 2), dtype=torch.float32)
    _load()[0].atho_silu_mul(gate_up.data_ptr(), out.data_ptr(), M, I2 // 2, torch.get_num_threads())
    return out


def check_decode_args(qkv, positions, cos, sin, kv_cache, slot_mapping, block_tables, num_heads) -> None:
    """What the C kernel trusts: dtypes, contiguity, shapes, and every position inside the tables."""
    _, _, BS, KVH, D = kv_cache.shape
    B = qkv.shape[0]
    assert _f32(qkv) and _f32(kv_cache) and _f32(cos) and _f32(sin) and qkv.shape[1] == (num_heads + 2 * KVH) * D
    assert cos.shape == sin.shape and cos.shape[1] == D and num_heads % KVH == 0
    for t in (positions, slot_mapping, block_tables):
        assert t.dtype == torch.long and t.device.type == "cpu" and t.is_contiguous() and t.shape[0] == B
    if B:
        assert int(positions.max()) < min(cos.shape[0], block_tables.shape[1] * BS)


def decode_attention(qkv: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     kv_cache: torch.Tensor, slot_mapping: torch.Tensor, block_tables: torch.Tensor,
                     num_heads: int, scale: float, check: bool = True) -> torch.Tensor:
    """One new token per sequence. qkv (B, (H + 2 KVH) D) is rotated in place; its k/v are written to the cache
    (2, NB, BS, KVH, D) at slot_mapping; returns (B, H D): each query head's attention over positions
    0..positions[b] of its sequence (block_tables (B, MB))."""
    _, NB, BS, KVH, D = kv_cache.shape
    B = qkv.shape[0]
    if check:
        check_decode_args(qkv, positions, cos, sin, kv_cache, slot_mapping, block_tables, num_heads)
    out = torch.empty((B, num_heads * D), dtype=torch.float32)
    status = _load()[0].atho_decode_attention(
        qkv.data_ptr(), qkv.shape[1], positions.data_ptr(), cos.data_ptr(), sin.data_ptr(), kv_cache.data_ptr(),
        NB, BS, slot_mapping.data_ptr(), block_tables.data_ptr(), block_tables.shape[1], B, num_heads, KVH, D,
        scale, out.data_ptr(), torch.get_num_threads())
    if status != 0:
        raise MemoryError("decode attention: cannot allocate scratch memory")
    return out


class _Weight(ctypes.Structure):
    _fields_ = [("parts", ctypes.c_int), ("kind", ctypes.c_int), ("blocks", ctypes.c_void_p),
                ("types", ctypes.c_int * 4), ("fkind", ctypes.c_int * 4), ("part", ctypes.c_void_p * 4),
                ("part_out", ctypes.c_long * 4), ("out", ctypes.c_long), ("in_", ctypes.c_long),
                ("bias", ctypes.c_void_p), ("cols", ctypes.c_void_p)]


class _Layer(ctypes.Structure):
    _fields_ = [("qkv", _Weight), ("o", _Weight), ("gate_up", _Weight), ("down", _Weight),
                ("post_norm_w", ctypes.c_void_p), ("next_norm_w", ctypes.c_void_p),
                ("post_eps", ctypes.c_float), ("next_eps", ctypes.c_float)]


def _projections(layer) -> tuple:
    a, m = layer.self_attn, layer.mlp
    return a.qkv_proj, a.o_proj, m.gate_up_proj, m.down_proj


def _stack_weight(qweight) -> bool:
    """A weight `atho_decode_layers` multiplies: nn/quant.py blocks, or GGUF blocks in at most 4 parts."""
    from athanor.nn.gguf_matmul import BlockParts
    from athanor.nn.quant import QuantizedWeight

    return isinstance(qweight, QuantizedWeight) or (isinstance(qweight, BlockParts) and len(qweight.parts) <= 4)


class DecodeStack:
    """A model's decoder layers described for `atho_decode_layers`: the whole stack of a decode step in one C
    call (no Python between layers). Only when every layer matmul is block-quantized: Q4_1/Q8_0 with float
    activations (nn/qkernels.c athq_qmatmul_f32_parts: nn/quant.py's re-packed rows, or the file's blocks) or a GGUF
    file's own blocks with int8 activations, each projection's parts in their own types (nn/gguf_kernels.c
    athg_matmul_parts, as Gemma's stack in nn/gemma_ops.c). Built once per model, it holds references to every
    tensor it points at."""

    def __init__(self, model) -> None:
        from athanor.nn import gguf_matmul, quant

        qlib, glib = quant._load()[0], gguf_matmul._load()[0]
        self._fmm = ctypes.cast(qlib.athq_qmatmul_f32_parts, ctypes.c_void_p) if qlib is not None else None
        self._gmm = ctypes.cast(glib.athg_matmul_parts, ctypes.c_void_p) if glib is not None else None
        lib = _load()[0]
        fn = lib.atho_decode_layers
        P, L, F, I = ctypes.c_void_p, ctypes.c_long, ctypes.c_float, ctypes.c_int
        fn.argtypes = [P, P, P, L, P, P, P, L, L, L, L, L, L, L, F, P, P, P, P, P, L, I]
        fn.restype = I
        self._fn = fn
        self._keep = []
        layers = list(model.layers)
        norms = [layer.input_layernorm for layer in layers[1:]] + [model.norm]
        self._layers = (_Layer * len(layers))(*(self._layer(ly, nxt) for ly, nxt in zip(layers, norms)))
        attn = layers[0].self_attn
        self.num_heads, self.scale, self.hidden = attn.num_heads, attn.scale, model.config.hidden_size
        self._attns = [ly.self_attn for ly in layers]  # plain list: no nn.Module attribute lookups per step
        self._cache_key: list | None = None

    @staticmethod
    def supports(model) -> bool:
        """Every layer projection is held as blocks the stack multiplies, and their kernels load here."""
        from athanor.nn import gguf_matmul, quant
        from athanor.nn.gguf_matmul import BlockParts

        weights = [getattr(lin, "qweight", None) for ly in model.layers for lin in _projections(ly)]
        if not all(_stack_weight(w) for w in weights):
            return False
        native = any(not p.float_activations for w in weights if isinstance(w, BlockParts) for p in w.parts)
        floats = any(not isinstance(w, BlockParts) or any(p.float_activations for p in w.parts) for w in weights)
        return (not native or gguf_matmul.available()) and (not floats or quant.available())

    def _weight(self, linear) -> _Weight:
        from athanor.nn import gguf_matmul
        from athanor.nn.gguf_matmul import BlockParts
        from athanor.nn.quant import _KINDS

        w, bias = linear.qweight, linear.bias
        if bias is not None:
            bias = bias.detach().float().contiguous()
            self._keep.append(bias)
        bias_ptr = bias.data_ptr() if bias is not None else None
        if not isinstance(w, BlockParts):
            self._keep.append(w.blocks)
            return _Weight(0, _KINDS[w.kind][0], w.blocks.data_ptr(), out=w.out_features, in_=w.in_features,
                           bias=bias_ptr)
        parts = w.parts
        self._keep.extend(p.raw for p in parts)
        cols = None
        if any(p.row_order is not None for p in parts):  # one gather over the stacked output (GGUFWeight.row_order)
            offsets = [sum(q.out_features for q in parts[:i]) for i in range(len(parts))]
            cols = torch.cat([off + (p.row_order if p.row_order is not None else torch.arange(p.out_features))
                              for off, p in zip(offsets, parts)]).to(torch.int64).contiguous()
            self._keep.append(cols)
        n = len(parts)
        fkinds = [gguf_matmul.FLOAT_KERNELS[p.ggml_type] if p.float_activations else -1 for p in parts]
        return _Weight(n, 0, None, (ctypes.c_int * 4)(*(p.ggml_type for p in parts)), (ctypes.c_int * 4)(*fkinds),
                       (ctypes.c_void_p * 4)(*(p.raw.data_ptr() for p in parts)),
                       (ctypes.c_long * 4)(*(p.out_features for p in parts)), w.out_features, w.in_features,
                       bias_ptr, cols.data_ptr() if cols is not None else None)

    def _layer(self, layer, next_norm) -> _Layer:
        post = layer.post_attention_layernorm
        for t in (post.weight, next_norm.weight):
            assert _f32(t)
            self._keep.append(t)
        return _Layer(*(self._weight(lin) for lin in _projections(layer)), post.weight.data_ptr(),
                      next_norm.weight.data_ptr(), post.eps, next_norm.eps)

    def run(self, x: torch.Tensor, h: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
            slot_mapping: torch.Tensor, block_tables: torch.Tensor) -> None:
        """x (B, C) residual stream, h (B, C) = layer 0's input norm of x; on return x is the stack's output
        and h its final norm. Arguments as `decode_attention` takes them (checked here, once)."""
        B = x.shape[0]
        ptrs, (NB, BS, KVH, D) = self._caches()
        width = (self.num_heads + 2 * KVH) * D
        check_decode_args(x.new_empty(B, width), positions, cos, sin, self._attns[0].kv_cache, slot_mapping,
                          block_tables, self.num_heads)
        assert _f32(x) and _f32(h)
        status = self._fn(self._fmm, self._gmm, self._layers, len(self._attns), ptrs, x.data_ptr(), h.data_ptr(), B,
                          self.hidden, self.num_heads, KVH, D, NB, BS, self.scale, positions.data_ptr(), cos.data_ptr(),
                          sin.data_ptr(), slot_mapping.data_ptr(), block_tables.data_ptr(), block_tables.shape[1],
                          torch.get_num_threads())
        if status != 0:
            raise MemoryError("decode step: cannot allocate scratch memory")

    def _caches(self):
        """The layers' KV caches as a C pointer array and their (NB, BS, KVH, D), checked once per set of caches:
        a step rebuilds them only when a cache tensor was replaced (a new model runner, a reallocation)."""
        caches = [a.kv_cache for a in self._attns]
        key = self._cache_key  # weak references to the tensors checked last: the same objects -> the same pointers
        if key is None or len(key) != len(caches) or any(r() is not c for r, c in zip(key, caches)):
            assert all(_f32(c) and c.shape == caches[0].shape for c in caches)
            self._cache_ptrs = (ctypes.c_void_p * len(caches))(*(c.data_ptr() for c in caches))
            self._cache_dims = tuple(caches[0].shape[1:])
            self._cache_key = [weakref.ref(c) for c in caches]
        return self._cache_ptrs, self._cache_dims
