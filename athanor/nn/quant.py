"""Quantized linear weights for CPU decode: GGUF Q4_1 / Q8_0 blocks multiplied by AVX2 kernels.

Batch-1 decode on a small CPU is bound by memory bandwidth: every token reads every weight once. fp16
weights (FBGEMM) read 2 bytes a weight; Q4_1 reads 0.625 and Q8_0 1.0625. `qmatmul` computes
`x @ W^T (+ bias)` with the weights kept as blocks in memory, in one of two activation modes:

- "f32" (default): the weights are dequantized in registers and multiplied with the unquantized x by fp32
  FMAs: Q8_0 sum_b d_b * sum_j q_j x_j; Q4_1 sum_b (d_b * sum_j q_j x_j + m_b * sum_j x_j), each x block's
  sum computed once per row per call. Only fp32 rounding separates it from `x @ w.dequantize().T` (relative
  error ~1e-7 of sum |w x|), so answers stay those of the float path.
- "int8": as llama.cpp does, each row of x is quantized per 32-block to int8 (scale amax/127, round half to
  even; for Q4_1 also the block sum that carries the weight offset m), then int8 dot products
  (`_mm256_maddubs_epi16` / `_mm256_madd_epi16`) are scaled and accumulated in fp32. About half the
  arithmetic of "f32", but |x_j - x̂_j| <= amax_b / 254 for x_j in block b, so
  |y_o - (x @ W^T)_o| <= sum_b amax_b / 254 * sum_{j in b} |W_oj|: that changes greedy answers (SmolLM2's
  capital of France becomes "L'Étoile...", as in llama.cpp).

Formats (GGUF's, blocks of 32 along in_features):
    Q8_0  34 B / 32:  d f16 | 32 x int8                      w = d * q
    Q4_1  20 B / 32:  d f16 | m f16 | 16 B nibbles            w = d * q + m   (lo nibbles = w0..15)
In memory each row keeps the same bytes with its scales gathered in front (d[nb] | m[nb] | quants), so
the kernel converts 8 scales with one instruction; `from_gguf` / `to_gguf` convert (a cheap reshuffle).

Exactness: `dequantize()` gives the weights the kernel multiplies (athanor.nn.dequant's float ops).
In both modes output row i depends only on x[i] and W, bit for bit, whatever M and the thread count (the
kernel is compiled with -ffp-contract=off, writes its FMAs explicitly and runs the same operations per row).
A NaN or inf in x[i] spoils output row i only: all NaN in "int8" mode, inf or NaN in "f32" mode.

A C file compiled at first use (cbuild.py: once per machine, cached, loaded with ctypes). Without a
compiler or without AVX2/FMA/F16C, `available()` is False and callers keep their fp16/fp32 path.

Not for: GPUs, training (no gradients), K-quants (Q4_K/Q6_K), or large-batch prefill speed: for M in
the hundreds fp32 BLAS is faster (benchmarks/bench_qmatmul.py).
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from athanor import cbuild

_SOURCE = Path(__file__).with_name("qkernels.c")
_KINDS = {"q4_1": (1, 20, 3), "q8_0": (0, 34, 8)}  # kind -> (kernel id, bytes per block, ggml type id)
_BLOCK = 32
_ACTIVATIONS = ("f32", "int8")


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str | None]:
    lib, reason = cbuild.load(_SOURCE)
    if lib is None:
        return None, reason.replace("athanor's CPU kernels", "quantized kernels")
    c_long, c_ptr = ctypes.c_long, ctypes.c_void_p
    lib.athq_qmatmul.argtypes = [ctypes.c_int, c_ptr, c_long, c_long, c_ptr, c_long, c_long, c_ptr, c_ptr, ctypes.c_int]
    lib.athq_qmatmul.restype = ctypes.c_int
    lib.athq_qmatmul_f32.argtypes = lib.athq_qmatmul.argtypes
    lib.athq_qmatmul_f32.restype = ctypes.c_int
    lib.athq_qmatmul_f32_ld.argtypes = [ctypes.c_int, c_ptr, c_long, c_long, c_ptr, c_long, c_long, c_ptr, c_ptr,
                                        c_long, ctypes.c_int]
    lib.athq_qmatmul_f32_ld.restype = ctypes.c_int
    lib.athq_qmatmul_f32_parts.argtypes = [ctypes.c_int, c_ptr, c_ptr, c_ptr, c_long, c_ptr, c_long, c_long, c_ptr,
                                           c_long, ctypes.c_int]
    lib.athq_qmatmul_f32_parts.restype = ctypes.c_int
    lib.athq_quantize_rows.argtypes = [c_ptr, c_long, c_long, c_long, c_ptr, c_ptr, c_ptr]
    lib.athq_quantize_rows.restype = None
    lib.athq_get_rows.argtypes = [ctypes.c_int, c_ptr, c_long, c_ptr, c_long, c_ptr]
    lib.athq_get_rows.restype = None
    return lib, None


def available() -> bool:
    """The kernel library is compiled and loaded (compiles on the first call of the process's life)."""
    return _load()[0] is not None


def unavailable_reason() -> str | None:
    """One line saying why `available()` is False; None when it is True."""
    return _load()[1]


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    """C's roundf, which GGUF's reference quantizer uses (torch.round rounds half to even)."""
    return torch.where(x >= 0, torch.floor(x + 0.5), torch.ceil(x - 0.5))


def _quantize_q8_0(w: torch.Tensor) -> torch.Tensor:
    """(n, 32) float32 -> (n, 34) uint8 blocks, as ggml's quantize_row_q8_0_ref."""
    d = w.abs().amax(dim=-1, keepdim=True) / 127  # (n, 1)
    inv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    q = _round_half_away(w * inv).to(torch.int8)
    return torch.cat((d.half().view(torch.uint8), q.view(torch.uint8)), dim=-1)


def _quantize_q4_1(w: torch.Tensor) -> torch.Tensor:
    """(n, 32) float32 -> (n, 20) uint8 blocks, as ggml's quantize_row_q4_1_ref."""
    lo, hi = w.amin(dim=-1, keepdim=True), w.amax(dim=-1, keepdim=True)
    d = (hi - lo) / 15
    inv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    q = ((w - lo) * inv + 0.5).trunc().clamp_(max=15).to(torch.uint8)  # (n, 32); the C int8 cast truncates
    nibbles = q[:, :16] | (q[:, 16:] << 4)
    return torch.cat((d.half().view(torch.uint8), lo.half().view(torch.uint8), nibbles), dim=-1)


def _gguf_to_rows(blocks: torch.Tensor, kind: str, out_features: int) -> torch.Tensor:
    """(out, nb * B) GGUF blocks -> the kernel's rows: every block's f16 scales first, then the quants."""
    g = blocks.reshape(out_features, -1, _KINDS[kind][1])  # (out, nb, B)
    head = 4 if kind == "q4_1" else 2
    scales = [g[:, :, k : k + 2].reshape(out_features, -1) for k in range(0, head, 2)]  # d (, m): (out, nb*2)
    return torch.cat([*scales, g[:, :, head:].reshape(out_features, -1)], dim=1)


def _fill_rows(dest: torch.Tensor, blocks: torch.Tensor, kind: str) -> None:
    """Write (out, nb * B) GGUF blocks into `dest` (out, nb * B), the kernel's row layout, without temporaries."""
    out_features = dest.shape[0]
    g = blocks.view(out_features, -1, _KINDS[kind][1])  # (out, nb, B)
    nb, head = g.shape[1], 4 if kind == "q4_1" else 2
    for k in range(0, head, 2):  # d (, m): nb f16 each
        dest[:, k * nb : (k + 2) * nb].view(out_features, nb, 2).copy_(g[:, :, k : k + 2])
    dest[:, head * nb :].view(out_features, nb, -1).copy_(g[:, :, head:])


def _rows_to_gguf(rows: torch.Tensor, kind: str) -> torch.Tensor:
    out_features, row_bytes = rows.shape
    nb = row_bytes // _KINDS[kind][1]
    head = 4 if kind == "q4_1" else 2
    parts = [rows[:, k * nb : (k + 2) * nb].reshape(out_features, nb, 2) for k in range(0, head, 2)]
    quants = rows[:, head * nb :].reshape(out_features, nb, -1)
    return torch.cat([*parts, quants], dim=2).reshape(out_features, row_bytes)


class QuantizedWeight:
    """A packed (out_features, in_features) weight. `blocks`: (out, in/32 * block bytes) uint8 in the kernel's
    row layout (see the module docstring); build one with `quantize` or `from_gguf`."""

    def __init__(self, blocks: torch.Tensor, kind: str, out_features: int, in_features: int) -> None:
        if kind not in _KINDS:
            raise ValueError(f"unknown quantization kind {kind!r}; supported: {', '.join(_KINDS)}")
        _check_in_features(in_features)
        row_bytes = in_features // _BLOCK * _KINDS[kind][1]
        if blocks.dtype != torch.uint8 or blocks.numel() != out_features * row_bytes:
            raise ValueError(f"{kind} blocks for a ({out_features}, {in_features}) weight must be "
                             f"{out_features * row_bytes} uint8 bytes, got {blocks.numel()} {blocks.dtype}")
        self.blocks = blocks.contiguous().view(out_features, row_bytes)
        self.kind, self.out_features, self.in_features = kind, out_features, in_features

    @property
    def nbytes(self) -> int:
        return self.blocks.numel()

    @classmethod
    def from_gguf(cls, raw: torch.Tensor, kind: str, out_features: int, in_features: int) -> QuantizedWeight:
        """A GGUF tensor's raw bytes (uint8, e.g. a view of the mapped file), kept exactly: no requantization."""
        if kind not in _KINDS:
            raise ValueError(f"unknown quantization kind {kind!r}; supported: {', '.join(_KINDS)}")
        _check_in_features(in_features)
        if raw.dtype != torch.uint8 or raw.numel() != out_features * in_features // _BLOCK * _KINDS[kind][1]:
            raise ValueError(f"{kind} GGUF data for a ({out_features}, {in_features}) weight must be "
                             f"{out_features * in_features // _BLOCK * _KINDS[kind][1]} uint8 bytes, got {raw.numel()}")
        return cls(_gguf_to_rows(raw, kind, out_features), kind, out_features, in_features)

    @classmethod
    def from_gguf_parts(cls, parts: list[torch.Tensor], kind: str, in_features: int) -> QuantizedWeight:
        """Several GGUF tensors of `kind` ((out_i, row bytes) uint8, e.g. views of the mapped file) stacked along
        the output into one weight: the only allocation is the result (no float copy, no concatenated temporary)."""
        if kind not in _KINDS:
            raise ValueError(f"unknown quantization kind {kind!r}; supported: {', '.join(_KINDS)}")
        _check_in_features(in_features)
        row_bytes = in_features // _BLOCK * _KINDS[kind][1]
        if any(p.dtype != torch.uint8 or p.numel() % row_bytes for p in parts):
            raise ValueError(f"{kind} GGUF data for rows of {in_features} weights must be uint8 rows of {row_bytes} B")
        blocks = torch.empty((sum(p.numel() // row_bytes for p in parts), row_bytes), dtype=torch.uint8)
        start = 0
        for p in parts:
            n = p.numel() // row_bytes
            _fill_rows(blocks[start : start + n], p.reshape(n, row_bytes), kind)
            start += n
        return cls(blocks, kind, blocks.shape[0], in_features)

    def to_gguf(self) -> torch.Tensor:
        """(out, in/32 * block bytes) uint8 in GGUF's block order (a new tensor)."""
        return _rows_to_gguf(self.blocks, self.kind)

    @classmethod
    def quantize(cls, w: torch.Tensor, kind: str) -> QuantizedWeight:
        """w (out, in) float -> blocks, round-to-nearest like GGUF's reference quantizer (bytes identical)."""
        if kind not in _KINDS:
            raise ValueError(f"unknown quantization kind {kind!r}; supported: {', '.join(_KINDS)}")
        if w.dim() != 2:
            raise ValueError(f"expected a 2-D (out_features, in_features) weight, got shape {tuple(w.shape)}")
        out_features, in_features = w.shape
        _check_in_features(in_features)
        flat = w.detach().float().contiguous().view(-1, _BLOCK)  # (out * in/32, 32)
        blocks = _quantize_q4_1(flat) if kind == "q4_1" else _quantize_q8_0(flat)
        return cls(_gguf_to_rows(blocks, kind, out_features), kind, out_features, in_features)

    def get_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows `ids` of the matrix as (N, in) float32, equal to `dequantize()[ids]` bit for bit: the embedding
        lookup of a token table kept in these blocks (a tied LM head and the embedding share one copy)."""
        from athanor.nn.dequant import dequantize

        ids = ids.reshape(-1).to(torch.long).contiguous()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.out_features):
            raise IndexError(f"row id out of range for a table of {self.out_features} rows")
        if not ids.numel():
            return torch.empty((0, self.in_features))
        lib = _load()[0]
        if lib is not None and self.blocks.is_contiguous():  # one C loop: a decode step's lookup is ~1 us, not ~300
            out = torch.empty((ids.numel(), self.in_features))
            lib.athq_get_rows(_KINDS[self.kind][0], self.blocks.data_ptr(), self.in_features, ids.data_ptr(),
                              ids.numel(), out.data_ptr())
            return out
        rows = _rows_to_gguf(self.blocks.index_select(0, ids), self.kind)
        return dequantize(rows.view(-1), _KINDS[self.kind][2], (ids.numel(), self.in_features))

    def dequantize(self) -> torch.Tensor:
        """(out, in) float32: exactly the weights the kernel multiplies (same float ops as the GGUF loader)."""
        from athanor.nn.dequant import dequantize

        shape = (self.out_features, self.in_features)
        return dequantize(self.to_gguf().view(-1), _KINDS[self.kind][2], shape)

    def __repr__(self) -> str:
        return f"QuantizedWeight({self.kind}, out={self.out_features}, in={self.in_features}, {self.nbytes} B)"


def _check_in_features(in_features: int) -> None:
    if in_features % _BLOCK:
        raise ValueError(f"quantized weights need in_features divisible by {_BLOCK}, got {in_features}")


def matmul_operands(x: torch.Tensor, bias: torch.Tensor | None, in_features: int, out_features: int):
    """(x, bias, y) ready for a C matmul: x (M, in) fp32 with unit column stride, bias fp32 (out,) or None, y the
    empty (M, out) fp32 result. Shared by qmatmul and nn/gguf_matmul.py."""
    if x.dim() != 2 or x.shape[1] != in_features:
        raise ValueError(f"x must be (M, {in_features}), got shape {tuple(x.shape)}")
    if x.dtype != torch.float32 or x.stride(1) != 1:
        x = x.float().contiguous()
    if bias is not None:
        bias = bias.float().contiguous()
        assert bias.shape == (out_features,), f"bias shape {tuple(bias.shape)} != ({out_features},)"
    return x, bias, torch.empty((x.shape[0], out_features), dtype=torch.float32)


def qmatmul(x: torch.Tensor, w: QuantizedWeight, bias: torch.Tensor | None = None, *,
            num_threads: int | None = None, activations: str = "f32") -> torch.Tensor:
    """x (M, in) float32 -> (M, out) float32 = x @ w.dequantize().T (+ bias).

    activations: "f32" (default) multiplies the unquantized x in fp32 (weights dequantized in registers;
    relative error ~1e-6 against float64); "int8" quantizes x per 32-block first, as llama.cpp does.
    num_threads: OpenMP threads over output rows (default torch.get_num_threads()); the result is the same
    bit for bit for any value. On an oversubscribed machine 1 can be much faster: every call ends in a
    join that waits for the other thread to get a core (benchmarks/bench_qmatmul.py).
    """
    if activations not in _ACTIVATIONS:
        raise ValueError(f"activations must be one of {', '.join(_ACTIVATIONS)}, got {activations!r}")
    lib, reason = _load()
    if lib is None:
        raise RuntimeError(f"quantized kernels unavailable: {reason}")
    x, bias, y = matmul_operands(x, bias, w.in_features, w.out_features)
    M = x.shape[0]
    if M == 0:
        return y
    fn = lib.athq_qmatmul_f32 if activations == "f32" else lib.athq_qmatmul
    status = fn(_KINDS[w.kind][0], w.blocks.data_ptr(), w.out_features, w.in_features,
                x.data_ptr(), M, x.stride(0), bias.data_ptr() if bias is not None else None,
                y.data_ptr(), num_threads or torch.get_num_threads())
    if status != 0:
        raise MemoryError("qmatmul: cannot allocate scratch memory")
    return y


def quantize_activations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernel's view of x (M, K): int8 q (M, K), scale d and d * sum(q) per block (M, K/32). For tests."""
    lib, reason = _load()
    if lib is None:
        raise RuntimeError(f"quantized kernels unavailable: {reason}")
    x = x.float().contiguous()
    M, K = x.shape
    _check_in_features(K)
    q = torch.empty((M, K), dtype=torch.int8)
    d, s = torch.empty((M, K // _BLOCK)), torch.empty((M, K // _BLOCK))
    lib.athq_quantize_rows(x.data_ptr(), M, K, K, q.data_ptr(), d.data_ptr(), s.data_ptr())
    return q, d, s
