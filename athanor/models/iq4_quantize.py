"""Quantize float weights to GGUF IQ4_NL (blocks of 32) and IQ4_XS (super-blocks of 256), llama.cpp's way.

For: `athanor quantize --type IQ4_NL|IQ4_XS` and `athanor export` (through gguf_quantize.quantize). Follows llama.cpp's
quantize_row_iq4_nl_impl (ggml-quants.c): every 32 weights get a scale d and a 4-bit index per weight into the
16-value non-linear table (kvalues_iq4nl); d is the best of a least-squares fit at the block's max and 15 trial
scales around it (the fit error weighted by x^2, or with an importance vector by qw * sqrt(sigma^2 + x^2)).
IQ4_XS then quantizes the eight sub-block scales of a super-block to 6 bits against one f16 d (the largest in
magnitude maps to -32) and re-picks the indices for the rounded scales. Vectorized over blocks with numpy in
float32; llama.cpp's C sums in another order (and may fuse multiply-adds), so a block at a near-tie can come out
one index apart.
Not for: reading or running these types (nn/dequant.py, nn/gguf_kernels.c), other IQ types.
"""

from __future__ import annotations

import numpy as np

VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float32)
# an index rounds up past the midpoint between two table values (llama.cpp's best_index_int8: ties go up)
_MIDPOINTS = (VALUES[:-1] + VALUES[1:]) / 2
_NTRY = 7  # trial scales (v0 + t) / max for t in -7..7, as llama-quantize
_EPS = 1e-15  # GROUP_MAX_EPS: a block this small is all zeros
_CHUNK = 1 << 16  # blocks of 32 quantized at once (bounded scratch memory)


def _index(a: np.ndarray) -> np.ndarray:
    """Nearest table index of every value (uint8)."""
    return np.searchsorted(_MIDPOINTS, a, side="right").astype(np.uint8)


def _fit(x: np.ndarray, w: np.ndarray, inv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices at scale 1/inv per block, then the weighted least-squares (sum w q x, sum w q^2).  x, w: (B, 32)"""
    q = VALUES[_index(x * inv[:, None])]
    wq = w * q
    return (wq * x).sum(1), (wq * q).sum(1)


def _block_scales(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The best scale of every 32-block (0 for an all-zero block).  x, w: (B, 32) float32 -> (B,)"""
    amax_at = np.abs(x).argmax(1)  # the first of equal magnitudes, as the C loop's strict >
    mx = x[np.arange(len(x)), amax_at]
    live = np.abs(mx) >= _EPS
    safe = np.where(live, mx, np.float32(1))
    sumqx, sumq2 = _fit(x, w, -VALUES[0] / safe)  # 1 / d with d = -max / v0
    d = np.where(sumq2 > 0, sumqx / np.where(sumq2 > 0, sumq2, 1), 0).astype(np.float32)
    best = d * sumqx
    for t in range(-_NTRY, _NTRY + 1):
        sumqx, sumq2 = _fit(x, w, (t + VALUES[0]) / safe)
        better = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
        d = np.where(better, sumqx / np.where(sumq2 > 0, sumq2, 1), d).astype(np.float32)
        best = np.where(better, d * sumqx, best)
    return np.where(live, d, 0).astype(np.float32)


def _weights(x: np.ndarray, importance: np.ndarray | None, super_size: int) -> np.ndarray:
    """Per-weight error weights.  x: (rows, K) -> (rows, K)"""
    if importance is None:
        return x * x
    xs = x.reshape(x.shape[0], -1, super_size)
    sigma2 = (xs * xs).sum(-1, keepdims=True) * np.float32(2 / super_size)
    return (importance.reshape(1, -1, super_size) * np.sqrt(sigma2 + xs * xs)).reshape(x.shape)


def _inverse(d: np.ndarray) -> np.ndarray:
    """1 / d as float32, 0 where d is 0."""
    return np.where(d != 0, 1 / np.where(d != 0, d, 1), 0).astype(np.float32)


def _slices(x: np.ndarray, importance: np.ndarray | None, super_size: int):
    """(first row, rows, their 32-blocks, the blocks' error weights) over x in slices of about _CHUNK blocks."""
    K = x.shape[1]
    step = max(1, _CHUNK * 32 // K)
    for r in range(0, x.shape[0], step):
        xr = x[r : r + step]
        yield r, xr, xr.reshape(-1, 32), _weights(xr, importance, super_size).reshape(-1, 32)


def _pack(idx: np.ndarray) -> np.ndarray:
    """(B, 32) indices -> (B, 16) bytes: index j in the low nibble of byte j, index 16 + j in the high one."""
    return idx[:, :16] | (idx[:, 16:] << 4)


def _checked(w: np.ndarray, block: int, importance: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    x = np.ascontiguousarray(w, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] % block:
        raise ValueError(f"needs (rows, K) weights with K a multiple of {block}, got shape {list(x.shape)}")
    if importance is not None:
        importance = np.ascontiguousarray(importance, dtype=np.float32).reshape(-1)
        if importance.size != x.shape[1]:
            raise ValueError(f"importance vector has {importance.size} values for rows of {x.shape[1]}")
    return x, importance


def quantize_iq4_nl(w: np.ndarray, importance: np.ndarray | None = None) -> np.ndarray:
    """(rows, K) float -> (rows, K / 32 * 18) uint8 IQ4_NL blocks: d f16 | 16 bytes of indices."""
    x, importance = _checked(w, 32, importance)
    rows, K = x.shape
    out = np.empty((rows * K // 32, 18), dtype=np.uint8)
    for r, xr, xb, wb in _slices(x, importance, 32):
        d = _block_scales(xb, wb)
        inv = _inverse(d)
        blocks = out[r * K // 32 : (r + len(xr)) * K // 32]
        blocks[:, :2] = d.astype(np.float16).view(np.uint8).reshape(-1, 2)
        blocks[:, 2:] = _pack(_index(xb * inv[:, None]))
    return out.reshape(rows, -1)


def quantize_iq4_xs(w: np.ndarray, importance: np.ndarray | None = None) -> np.ndarray:
    """(rows, K) float -> (rows, K / 256 * 136) uint8 IQ4_XS super-blocks:
    d f16 | scales_h u16 | 4 bytes scales_l | 128 bytes of indices."""
    x, importance = _checked(w, 256, importance)
    rows, K = x.shape
    out = np.empty((rows * K // 256, 136), dtype=np.uint8)
    for r, xr, xb, wb in _slices(x, importance, 256):
        scales = _block_scales(xb, wb).reshape(-1, 8)  # (S, 8)
        at = np.abs(scales).argmax(1)
        d = -scales[np.arange(len(scales)), at] / np.float32(32)  # the largest magnitude -> -32
        inv = _inverse(d)
        ls = np.clip(np.rint(inv[:, None] * scales), -32, 31).astype(np.int32)  # (S, 8)
        dl = (d[:, None] * ls).astype(np.float32).reshape(-1)
        idl = _inverse(dl)
        u = (ls + 32).astype(np.uint16)
        blocks = out[r * K // 256 : (r + len(xr)) * K // 256]
        blocks[:, :2] = d.astype(np.float16).view(np.uint8).reshape(-1, 2)
        sh = ((u >> 4) << np.arange(0, 16, 2, dtype=np.uint16)).sum(1).astype(np.uint16)
        blocks[:, 2:4] = sh.view(np.uint8).reshape(-1, 2)
        blocks[:, 4:8] = (u[:, 0::2] & 0xF) | ((u[:, 1::2] & 0xF) << 4)
        blocks[:, 8:] = _pack(_index(xb * idl[:, None])).reshape(-1, 128)
    return out.reshape(rows, -1)
