"""Weights kept in a GGUF file's own block format (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS) and
multiplied there.

`GGUFWeight` holds one (out_features, in_features) matrix as the file's bytes (often a view of the mapped
file: no copy, so a loaded model's weights take the file's size). `gguf_matmul(x, w)` computes
`x @ W^T (+ bias)` with nn/gguf_kernels.c: x is quantized on the fly per row (q8_0 per 32 for the 32-blocks,
q8_K per 256 for the K-quants and IQ4_XS, as llama.cpp does) and the inner loop is int8 dot products. Error
against `x @ w.dequantize().T`: each x_j moves by at most dx_b / 2 (dx_b = amax of its block / 127), so
|y_o - ref_o| <= sum_j |W_oj| dx_b(j) / 2 (plus fp32 rounding); tests check that bound.
`get_rows` dequantizes chosen rows (the embedding lookup of a quantized token table).

Output row i depends only on x[i] and W, bit for bit, whatever M or the thread count.

Q4_1 and Q8_0 weights can also run with float activations (`GGUFWeight.with_float_activations`): nn/qkernels.c's
fp32 kernel reads the file's blocks as they are, the same bits as nn/quant.py's re-packed copy of them, without
the copy (a Q4_1 or Q8_0 file's weights stay pages of the mapped file).

Not for: quantizing float weights (models/gguf_quantize.py and the gguf package), GPUs or training.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
from pathlib import Path

import torch

from athanor import cbuild

_SOURCE = Path(__file__).with_name("gguf_kernels.c")
# ggml type id -> (name, weights per block, bytes per block)
GGUF_KERNEL_TYPES = {2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22), 8: ("Q8_0", 32, 34),
                     12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210),
                     20: ("IQ4_NL", 32, 18), 23: ("IQ4_XS", 256, 136)}
# types nn/qkernels.c multiplies in their own blocks with float activations: ggml type -> its kernel id there
FLOAT_KERNELS = {3: 3, 8: 2}


def vnni_supported() -> bool:
    """This CPU has AVX512-VNNI with 256-bit forms (vpdpbusd on ymm): the int8 dots take one instruction."""
    return cbuild.has_cpu_flags("avx512f", "avx512bw", "avx512vl", "avx512_vnni")


@functools.cache
def _load(portable: bool = False, isa: str = "auto") -> tuple[ctypes.CDLL | None, str | None]:
    """isa: "auto" (VNNI where the CPU has it, unless ATHANOR_GGUF_ISA=avx2), "avx2", or "vnni"."""
    if isa == "auto":
        isa = "vnni" if vnni_supported() and os.environ.get("ATHANOR_GGUF_ISA", "") != "avx2" else "avx2"
    extra = tuple(cbuild.AVX512_VNNI_FLAGS) if isa == "vnni" and not portable else ()
    lib, reason = cbuild.load(_SOURCE, portable=portable, extra=extra)
    if lib is None:
        return None, reason.replace("athanor's CPU kernels", "GGUF block kernels")
    c_long, c_ptr = ctypes.c_long, ctypes.c_void_p
    lib.athg_matmul.argtypes = [ctypes.c_int, c_ptr, c_long, c_long, c_ptr, c_long, c_long, c_ptr, c_ptr, ctypes.c_int]
    lib.athg_matmul.restype = ctypes.c_int
    lib.athg_matmul_ld.argtypes = [ctypes.c_int, c_ptr, c_long, c_long, c_ptr, c_long, c_long, c_ptr, c_ptr, c_long,
                                   ctypes.c_int]
    lib.athg_matmul_ld.restype = ctypes.c_int
    lib.athg_matmul_parts.argtypes = [ctypes.c_int, c_ptr, c_ptr, c_ptr, c_long, c_ptr, c_long, c_long, c_ptr, c_long,
                                      ctypes.c_int]
    lib.athg_matmul_parts.restype = ctypes.c_int
    lib.athg_get_rows.argtypes = [ctypes.c_int, c_ptr, c_long, c_ptr, c_long, c_ptr]
    lib.athg_get_rows.restype = ctypes.c_int
    lib.athg_quantize_rows.argtypes = [c_ptr, c_long, c_long, c_long, ctypes.c_int, c_ptr, c_ptr, c_ptr, ctypes.c_int]
    lib.athg_quantize_rows.restype = ctypes.c_int
    return lib, None


def available() -> bool:
    """The kernel library compiles and loads here (compiled on the first call of the process's life)."""
    return _load()[0] is not None


def unavailable_reason() -> str | None:
    return _load()[1]


def supports(ggml_type: int, in_features: int) -> bool:
    """A (*, in_features) matrix of this type can stay in its blocks."""
    return ggml_type in GGUF_KERNEL_TYPES and in_features % GGUF_KERNEL_TYPES[ggml_type][1] == 0


class GGUFWeight:
    """A (out_features, in_features) weight as GGUF blocks: `raw` is (out, row_bytes) uint8, rows in order."""

    def __init__(self, raw: torch.Tensor, ggml_type: int, out_features: int, in_features: int) -> None:
        if ggml_type not in GGUF_KERNEL_TYPES:
            raise ValueError(f"ggml type {ggml_type} has no block kernel; supported: "
                             f"{', '.join(n for n, _, _ in GGUF_KERNEL_TYPES.values())}")
        name, bw, bb = GGUF_KERNEL_TYPES[ggml_type]
        if in_features % bw:
            raise ValueError(f"{name} weights need in_features divisible by {bw}, got {in_features}")
        row_bytes = in_features // bw * bb
        if raw.dtype != torch.uint8 or raw.numel() != out_features * row_bytes:
            raise ValueError(f"{name} data for a ({out_features}, {in_features}) weight must be "
                             f"{out_features * row_bytes} uint8 bytes, got {raw.numel()} {raw.dtype}")
        self.raw = raw.view(out_features, row_bytes)  # a view: contiguous by construction of the file
        assert self.raw.is_contiguous()
        self.ggml_type, self.out_features, self.in_features = ggml_type, out_features, in_features
        self.row_order: torch.Tensor | None = None  # see with_row_order
        self.float_activations = False  # see with_float_activations

    @property
    def type_name(self) -> str:
        return GGUF_KERNEL_TYPES[self.ggml_type][0]

    @property
    def nbytes(self) -> int:
        return self.raw.numel()

    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    def with_row_order(self, index: torch.Tensor) -> GGUFWeight:
        """The weight whose row i is this one's row index[i], without moving bytes: the matmul picks its
        output columns instead (how llama.cpp's q/k row permutation is undone)."""
        w = self._copy()
        w.row_order = index.to(torch.long) if self.row_order is None else self.row_order[index]
        return w

    def with_float_activations(self) -> GGUFWeight:
        """The same Q4_1/Q8_0 blocks multiplied with fp32 activations (nn/qkernels.c reading GGUF's layout): the
        products of nn/quant.py's re-packed copy, bit for bit, with no copy."""
        if self.ggml_type not in FLOAT_KERNELS:
            raise ValueError(f"{self.type_name} has no float-activation kernel (Q4_1 and Q8_0 do)")
        w = self._copy()
        w.float_activations = True
        return w

    def _copy(self) -> GGUFWeight:
        w = GGUFWeight(self.raw, self.ggml_type, self.out_features, self.in_features)
        w.mapping = getattr(self, "mapping", None)
        w.row_order, w.float_activations = self.row_order, self.float_activations
        return w

    def release_pages(self) -> None:
        """Drop this weight's pages of the mapped file from the process's resident set (after a re-pack copied
        them: the file's bytes and the copy would both count). They stay in the page cache; a later read of
        `raw` maps them back. No-op without a mapping (a tensor that is not a view of a file)."""
        m = getattr(self, "mapping", None)
        if m is None or not hasattr(m, "madvise"):
            return
        start = self.raw.data_ptr() - torch.frombuffer(m, dtype=torch.uint8, count=1).data_ptr()
        lo = start // mmap.PAGESIZE * mmap.PAGESIZE
        m.madvise(mmap.MADV_DONTNEED, lo, start + self.nbytes - lo)

    def dequantize(self) -> torch.Tensor:
        """(out, in) float32, through athanor.nn.dequant (bit for bit llama.cpp's reference)."""
        from athanor.nn.dequant import dequantize

        w = dequantize(self.raw.reshape(-1), self.ggml_type, (self.out_features, self.in_features))
        return w if self.row_order is None else w[self.row_order]

    def __repr__(self) -> str:
        return f"GGUFWeight({self.type_name}, out={self.out_features}, in={self.in_features}, {self.nbytes} B)"


def _lib(portable: bool, isa: str = "auto") -> ctypes.CDLL:
    lib, reason = _load(portable, isa)
    if lib is None:
        raise RuntimeError(f"GGUF block kernels unavailable: {reason}")
    return lib


_PARALLEL_BYTES = 1 << 20  # below this much weight work a second thread costs more (join) than it saves


def _threads(w: GGUFWeight, M: int) -> int:
    return torch.get_num_threads() if w.nbytes * M >= _PARALLEL_BYTES else 1


def gguf_matmul(x: torch.Tensor, w: GGUFWeight, bias: torch.Tensor | None = None, *,
                num_threads: int | None = None, portable: bool = False, isa: str = "auto") -> torch.Tensor:
    """x (M, in) float -> (M, out) float32 = x @ W^T (+ bias), x quantized to int8 per block on the way.
    num_threads: OpenMP threads over output rows (default: torch's count for big products, 1 for small ones);
    the result is the same bit for bit for any value. portable: the plain C build (no AVX2), for tests;
    isa: "avx2" or "vnni" to pick the SIMD build (tests; "auto" picks the best this CPU runs)."""
    from athanor.nn.quant import matmul_operands

    x, bias, y = matmul_operands(x, bias, w.in_features, w.out_features)
    M = x.shape[0]
    if M == 0:
        return y
    fused_bias = bias if w.row_order is None else None  # bias is in the reordered rows' order
    bias_ptr = fused_bias.data_ptr() if fused_bias is not None else None
    if w.float_activations:  # as nn/quant.qmatmul: torch's thread count
        status = _float_lib().athq_qmatmul_f32_ld(
            FLOAT_KERNELS[w.ggml_type], w.raw.data_ptr(), w.out_features, w.in_features, x.data_ptr(), M, x.stride(0),
            bias_ptr, y.data_ptr(), w.out_features, num_threads or torch.get_num_threads())
    else:
        status = _lib(portable, isa).athg_matmul(w.ggml_type, w.raw.data_ptr(), w.out_features, w.in_features,
                                                 x.data_ptr(), M, x.stride(0), bias_ptr, y.data_ptr(),
                                                 num_threads or _threads(w, M))
    if status != 0:
        raise MemoryError("gguf_matmul: cannot allocate scratch memory")
    if w.row_order is None:
        return y
    y = y[:, w.row_order]
    return y if bias is None else y.add_(bias)


def _float_lib() -> ctypes.CDLL:
    from athanor.nn import quant

    lib, reason = quant._load()
    if lib is None:
        raise RuntimeError(f"quantized kernels unavailable: {reason}")
    return lib


def quantize_activations(x: torch.Tensor, group: int, *, num_threads: int = 1, portable: bool = False,
                         isa: str = "auto") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the matmuls dot with: x (M, K) float32 -> int8 quants (M, K), one scale per `group` (32 or 256) weights
    (M, K / group) and the int16 sums of every 16 quants (M, K / 16). For tests."""
    x = x.float().contiguous()
    M, K = x.shape
    q = torch.empty(M, K, dtype=torch.int8)
    d = torch.empty(M, K // group, dtype=torch.float32)
    s = torch.empty(M, K // 16, dtype=torch.int16)
    if _lib(portable, isa).athg_quantize_rows(x.data_ptr(), M, K, K, group, q.data_ptr(), d.data_ptr(), s.data_ptr(),
                                              num_threads) != 0:
        raise ValueError(f"in_features {K} is not a multiple of {group}")
    return q, d, s


def get_rows(w: GGUFWeight, ids: torch.Tensor, *, portable: bool = False) -> torch.Tensor:
    """Rows `ids` (N,) of the table dequantized: (N, in) float32, equal to w.dequantize()[ids]."""
    if w.float_activations:  # athanor.nn.dequant's float ops, as nn/quant.QuantizedWeight.get_rows
        from athanor.nn.dequant import dequantize

        ids = ids.reshape(-1).to(torch.long)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= w.out_features):
            raise IndexError(f"row id out of range for a table of {w.out_features} rows")
        if w.row_order is not None:
            ids = w.row_order[ids]
        rows = w.raw.index_select(0, ids)
        return dequantize(rows.reshape(-1), w.ggml_type, (ids.numel(), w.in_features))
    ids = ids.reshape(-1).to(torch.long).contiguous()
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= w.out_features):
        raise IndexError(f"row id out of range for a table of {w.out_features} rows")
    if w.row_order is not None:
        ids = w.row_order[ids]
    out = torch.empty((ids.numel(), w.in_features), dtype=torch.float32)
    if ids.numel():
        status = _lib(portable).athg_get_rows(w.ggml_type, w.raw.data_ptr(), w.in_features, ids.data_ptr(),
                                              ids.numel(), out.data_ptr())
        if status != 0:
            raise MemoryError("get_rows: cannot allocate scratch memory")
    return out


class BlockParts:
    """One Linear's weight as GGUF blocks: the parts of a fused matrix (q | k | v, gate | up) stacked along the
    output, each in its own type (a Q4_K_M file mixes them), each a view of the file: nothing concatenated."""

    def __init__(self, parts: list[GGUFWeight]) -> None:
        assert parts and len({p.in_features for p in parts}) == 1
        self.parts = parts
        self.in_features, self.out_features = parts[0].in_features, sum(p.out_features for p in parts)

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.parts)

    def matmul(self, x: torch.Tensor, bias: torch.Tensor | None = None, *, isa: str = "auto") -> torch.Tensor:
        """x (M, in) -> (M, out) float32. Several parts: x quantized once per block size and one parallel loop
        over every part's rows (nn/gguf_kernels.c athg_matmul_parts; float-activation parts: nn/qkernels.c
        athq_qmatmul_f32_parts), the same bits as part by part."""
        if len(self.parts) == 1:
            return gguf_matmul(x, self.parts[0], bias, isa=isa)
        floats = {p.float_activations for p in self.parts}
        if len(self.parts) > 8 or len(floats) > 1 or any(p.row_order is not None for p in self.parts):
            y = torch.cat([gguf_matmul(x, p, isa=isa) for p in self.parts], dim=1)
            return y if bias is None else y.add_(bias)
        from athanor.nn.quant import matmul_operands

        x, _, y = matmul_operands(x, None, self.in_features, self.out_features)
        M = x.shape[0]
        if M:
            n, float_activations = len(self.parts), floats.pop()
            types = (ctypes.c_int * n)(*(FLOAT_KERNELS[p.ggml_type] if float_activations else p.ggml_type
                                         for p in self.parts))
            ptrs = (ctypes.c_void_p * n)(*(p.raw.data_ptr() for p in self.parts))
            outs = (ctypes.c_long * n)(*(p.out_features for p in self.parts))
            if float_activations:  # nn/qkernels.c, as nn/quant.qmatmul: torch's thread count
                fn, threads = _float_lib().athq_qmatmul_f32_parts, torch.get_num_threads()
            else:
                fn = _lib(False, isa).athg_matmul_parts
                threads = torch.get_num_threads() if self.nbytes * M >= _PARALLEL_BYTES else 1
            status = fn(n, types, ptrs, outs, self.in_features, x.data_ptr(), M, x.stride(0), y.data_ptr(),
                        self.out_features, threads)
            if status != 0:
                raise MemoryError("gguf_matmul: cannot allocate scratch memory")
        return y if bias is None else y.add_(bias)

    def dequantize(self) -> torch.Tensor:
        return torch.cat([p.dequantize() for p in self.parts])

    def __repr__(self) -> str:
        return f"BlockParts({', '.join(map(repr, self.parts))})"
