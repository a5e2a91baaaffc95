"""Gemma 3's decode step through one C call for the whole layer stack (nn/gemma_ops.c), weights in GGUF blocks.

Why: with the matmuls in nn/gguf_kernels.c, a Gemma 3 270M decode step on a 2-core CPU spent about half its
time in PyTorch running ~30 small ops per layer one at a time (norms, per-head q/k norms, RoPE, paged
attention, GELU). `GemmaDecodeStack.run` does all 18 layers in C with the GIL released: the same operations
as Gemma3Layer.forward (nn/gemma3.py) in fp32, with the norms' sums of squares in double and e^x by a
polynomial (~2 ulp), so logits agree with the per-op path to float rounding, not bit for bit.

Prefill chunks of up to nn/gemma3.GEMMA_FUSED_CHUNK_TOKENS tokens per sequence run here too, as rows: the rows
between matmuls split over threads, attention takes one row's query heads of a kv head at a time (each key and
value loaded once for all of them, v summed in registers, e^x 8 scores at a time; a decode step's few rows one head
per item, so both threads work, with each head's bits the same). A row's numbers are the same
whatever else is in the step, so a prompt's logits equal its tokens decoded one by one.

Used by Gemma3Model when every layer projection is held as GGUF blocks (`build_model(..., quant={"blocks":
True})`), on the CPU with an fp32 KV cache, unless `ATHANOR_CPU_OPS=0`. Not for: float or Q4_1 weights, GPUs,
autograd.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import torch

from athanor import cbuild

_SOURCE = Path(__file__).with_name("gemma_ops.c")


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str | None]:
    if os.environ.get("ATHANOR_CPU_OPS", "1") == "0":
        return None, "disabled by ATHANOR_CPU_OPS=0"
    lib, reason = cbuild.load(_SOURCE)
    if lib is None:
        return None, reason
    P, L, F, I = ctypes.c_void_p, ctypes.c_long, ctypes.c_float, ctypes.c_int
    lib.gemma_decode_layers.argtypes = [P, P, L, P, P, P, L, L, L, L, L, L, L, L, F, F, P, P, P, L, I]
    lib.gemma_decode_layers.restype = I
    return lib, None


class _Linear(ctypes.Structure):
    _fields_ = [("n", ctypes.c_int), ("types", ctypes.c_int * 4), ("blocks", ctypes.c_void_p * 4),
                ("out", ctypes.c_long * 4)]


class _Layer(ctypes.Structure):
    _fields_ = [("qkv", _Linear), ("o", _Linear), ("gate_up", _Linear), ("down", _Linear),
                *((name, ctypes.c_void_p) for name in ("in_norm", "q_norm", "k_norm", "post_attn_norm",
                                                        "pre_ffn_norm", "post_ffn_norm", "cos", "sin")),
                ("window", ctypes.c_long), ("cache", ctypes.c_void_p)]


def _projections(layer) -> tuple:
    a, m = layer.self_attn, layer.mlp
    return a.qkv_proj, a.o_proj, m.gate_up_proj, m.down_proj


def _f32(t: torch.Tensor) -> bool:
    return t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous()


class GemmaDecodeStack:
    """A Gemma3Model's layers described for `gemma_decode_layers`. Built once per model (it keeps every tensor
    it points at); the RoPE tables and KV caches are re-read on each run (both can be replaced)."""

    def __init__(self, model) -> None:
        from athanor.nn import gguf_matmul

        self._mm = ctypes.cast(gguf_matmul._lib(False).athg_matmul_parts, ctypes.c_void_p)
        self._fn = _load()[0].gemma_decode_layers
        self._model = model
        cfg = model.config
        self.C, self.I, self.eps = cfg.hidden_size, cfg.intermediate_size, cfg.rms_norm_eps
        attn = model.layers[0].self_attn
        self.H, self.KVH, self.D, self.scale = attn.num_heads, attn.num_kv_heads, attn.head_dim, attn.scale
        self._keep: list[torch.Tensor] = []
        self._layers = (_Layer * len(model.layers))(*(self._layer(ly) for ly in model.layers))
        self._final = self._norm(model.norm)

    @staticmethod
    def supports(model) -> bool:
        """Every projection is GGUF blocks (at most 4 parts, no row reorder, no bias); shapes in whole lanes;
        one eps for every norm."""
        from athanor.nn.gguf_matmul import BlockParts

        if _load()[0] is None or not all(isinstance(getattr(lin, "qweight", None), BlockParts)
                                         and len(lin.qweight.parts) <= 4 and lin.bias is None
                                         and all(p.row_order is None for p in lin.qweight.parts)
                                         for ly in model.layers for lin in _projections(ly)):
            return False
        cfg, eps = model.config, model.config.rms_norm_eps
        norms = [model.norm] + [n for ly in model.layers for n in (
            ly.input_layernorm, ly.self_attn.q_norm, ly.self_attn.k_norm, ly.post_attention_layernorm,
            ly.pre_feedforward_layernorm, ly.post_feedforward_layernorm)]
        return (cfg.hidden_size % 8 == 0 and cfg.intermediate_size % 8 == 0 and cfg.head_dim % 8 == 0
                and cfg.head_dim <= 1024 and all(n.eps == eps for n in norms))

    def _norm(self, norm) -> int:
        w = norm.weight.detach()
        assert _f32(w)
        self._keep.append(w)
        return w.data_ptr()

    def _linear(self, lin) -> _Linear:
        parts = lin.qweight.parts
        self._keep.extend(p.raw for p in parts)
        return _Linear(len(parts), (ctypes.c_int * 4)(*(p.ggml_type for p in parts)),
                       (ctypes.c_void_p * 4)(*(p.raw.data_ptr() for p in parts)),
                       (ctypes.c_long * 4)(*(p.out_features for p in parts)))

    def _layer(self, ly) -> _Layer:
        a = ly.self_attn
        norms = (ly.input_layernorm, a.q_norm, a.k_norm, ly.post_attention_layernorm, ly.pre_feedforward_layernorm,
                 ly.post_feedforward_layernorm)
        return _Layer(*(self._linear(lin) for lin in _projections(ly)), *(self._norm(n) for n in norms),
                      None, None, a.window, None)

    def run(self, x: torch.Tensor, positions: torch.Tensor, slot_mapping: torch.Tensor,
            block_tables: torch.Tensor) -> torch.Tensor:
        """x (B, C) scaled embeddings of the new tokens (updated in place: the residual stream) -> (B, C) the
        final norm of the stack's output. Writes each layer's k/v at slot_mapping."""
        model = self._model
        B = x.shape[0]
        rope = (model.rotary, model.rotary_local)
        for r in rope:
            r.cover(positions)  # grows a lazy table to cover the positions
        caches = [ly.self_attn.kv_cache for ly in model.layers]
        _, NB, BS, KVH, D = caches[0].shape
        assert KVH == self.KVH and D == self.D and _f32(x) and x.shape == (B, self.C)
        assert all(_f32(c) and c.shape == caches[0].shape for c in caches)
        for t in (positions, slot_mapping, block_tables):
            assert t.dtype == torch.long and t.device.type == "cpu" and t.is_contiguous() and t.shape[0] == B
        if B:
            top = int(positions.max())
            assert top < min(block_tables.shape[1] * BS, *(r.cos.shape[0] for r in rope))
            assert int(slot_mapping.min()) >= 0 and int(slot_mapping.max()) < NB * BS
            assert int(block_tables.min()) >= 0 and int(block_tables.max()) < NB
        for spec, ly, cache in zip(self._layers, model.layers, caches):
            r = model.rotary_local if ly.is_sliding else model.rotary
            spec.cos, spec.sin, spec.cache = r.cos.data_ptr(), r.sin.data_ptr(), cache.data_ptr()
        h = torch.empty_like(x)
        status = self._fn(self._mm, self._layers, len(caches), self._final, x.data_ptr(), h.data_ptr(), B, self.C,
                          self.H, self.KVH, self.D, self.I, NB, BS, self.eps, self.scale, positions.data_ptr(),
                          slot_mapping.data_ptr(), block_tables.data_ptr(), block_tables.shape[1],
                          torch.get_num_threads())
        if status != 0:
            raise MemoryError("gemma decode step: cannot allocate scratch memory")
        return h
