"""Dequantize GGUF tensor data (raw bytes) to float32 torch tensors with vectorized torch ops.

For: the types llama.cpp files of our architectures use — F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q4_K, Q5_K,
Q6_K, IQ4_NL, IQ4_XS. Results match `gguf.quants.dequantize` (llama.cpp's reference) bit for bit: the float ops run in
the same order. Not for quantizing (gguf_export.py uses `gguf.quants.quantize`) nor for running
quantized matmuls: everything becomes float32 here.

Block layouts (one block = `block_size` weights in `type_size` bytes; "f16" = IEEE half):
    Q8_0  34 B / 32:  d f16 | 32 x int8                           w = q * d
    Q4_0  18 B / 32:  d f16 | 16 B nibbles (lo = w0..15, hi = w16..31)    w = (q - 8) * d
    Q4_1  20 B / 32:  d f16 | m f16 | 16 B nibbles                 w = d * q + m
    Q5_0  22 B / 32:  d f16 | qh u32 (bit j = 5th bit of w_j) | 16 B nibbles    w = (q - 16) * d
    Q4_K 144 B / 256: d f16 | dmin f16 | 12 B 6-bit scales+mins | 128 B nibbles    w = d*sc * q - dmin*m
    Q5_K 176 B / 256: as Q4_K, plus 32 B high bits before the nibbles
    Q6_K 210 B / 256: 128 B low nibbles | 64 B 2-bit highs | 16 x int8 scales | d f16    w = d*sc * (q - 32)
    IQ4_NL 18 B / 32: d f16 | 16 B nibbles (lo = w0..15, hi = w16..31)    w = d * T[q]
    IQ4_XS 136 B / 256: d f16 | scales_h u16 | 4 B scales_l | 128 B nibbles (16 B per 32, as IQ4_NL)
                      w = d*(ls - 32) * T[q], ls = 4 bits of scales_l | 2 bits of scales_h << 4 per 32
    (T: llama.cpp's 16-entry non-linear table kvalues_iq4nl)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from athanor.errors import ModelFormatError

# ggml type id -> (name, block_size in weights, type_size in bytes); ids are gguf.GGMLQuantizationType's
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    8: ("Q8_0", 32, 34),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    20: ("IQ4_NL", 32, 18),
    23: ("IQ4_XS", 256, 136),
    30: ("BF16", 1, 2),
}


def _half(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """The f16 at byte `start` of every block, as float32.  # (n_blocks, 1)"""
    return blocks[:, start : start + 2].view(torch.float16).float()


def _nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Split bytes into 4-bit values: low nibbles first, then high.  # (..., k) -> (..., 2, k) uint8"""
    q = torch.empty((*packed.shape[:-1], 2, packed.shape[-1]), dtype=torch.uint8)
    torch.bitwise_and(packed, 0x0F, out=q[..., 0, :])
    torch.bitwise_right_shift(packed, 4, out=q[..., 1, :])
    return q


def _affine(q: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
    """float32(q) * scale (+ offset), in that order (as the reference), in one fresh buffer.

    Writing in place into one new tensor is ~3x faster here than `scale * q + offset`: on this class of
    machine the cost is first-touch page faults of freshly allocated memory, not arithmetic.
    """
    out = torch.empty(q.shape, dtype=torch.float32).copy_(q).mul_(scale)
    return out if offset is None else out.add_(offset)


def _q8_0(blocks: torch.Tensor) -> torch.Tensor:
    return _affine(blocks[:, 2:].view(torch.int8), _half(blocks, 0))


def _q4_0(blocks: torch.Tensor) -> torch.Tensor:
    q = _nibbles(blocks[:, 2:]).view(-1, 32).view(torch.int8).sub_(8)  # (n, 32) in [-8, 7]
    return _affine(q, _half(blocks, 0))


def _q5_0(blocks: torch.Tensor) -> torch.Tensor:
    qh = blocks[:, 2:6].contiguous().view(torch.int32)  # (n, 1): bit j is the 5th bit of weight j
    bits = ((qh >> torch.arange(32, dtype=torch.int32)) & 1).to(torch.uint8)  # (n, 32)
    q = (_nibbles(blocks[:, 6:]).view(-1, 32) | (bits << 4)).view(torch.int8).sub_(16)  # (n, 32) in [-16, 15]
    return _affine(q, _half(blocks, 0))


def _q4_1(blocks: torch.Tensor) -> torch.Tensor:
    dm = blocks[:, :4].view(torch.float16).float()  # (n, 2): d, m
    q = _nibbles(blocks[:, 4:]).view(-1, 32)  # (n, 32) uint8 in [0, 15]
    return _affine(q, dm[:, :1], dm[:, 1:])


def _k_scales(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K/Q5_K: per sub-block scale d*sc and offset -dmin*m.  # each (n, 8, 1) float32

    The 12 scale bytes pack eight 6-bit scales and eight 6-bit mins: bytes 0-3 hold scales 0-3 (low 6
    bits) and the top 2 bits of scales 4-7; bytes 4-7 the same for mins; bytes 8-11 the low 4 bits of
    scales 4-7 (low nibble) and mins 4-7 (high nibble).
    """
    s = blocks[:, 4:16].view(-1, 3, 4)
    lo, hi, mixed = s[:, 0], s[:, 1], s[:, 2]  # each (n, 4)
    sc = torch.cat((lo & 0x3F, (mixed & 0x0F) | ((lo >> 2) & 0x30)), dim=-1)  # (n, 8)
    mn = torch.cat((hi & 0x3F, (mixed >> 4) | ((hi >> 2) & 0x30)), dim=-1)
    d = blocks[:, :4].view(torch.float16).float()  # (n, 2): d, dmin
    return (d[:, :1] * sc).unsqueeze(-1), (d[:, 1:] * mn).neg_().unsqueeze(-1)  # x - y == x + (-y) exactly


def _q4_k(blocks: torch.Tensor) -> torch.Tensor:
    scale, offset = _k_scales(blocks)
    q = _nibbles(blocks[:, 16:].view(-1, 4, 32)).view(-1, 8, 32)  # sub-block 2j = low nibbles of chunk j
    return _affine(q, scale, offset).view(-1, 256)


def _q5_k(blocks: torch.Tensor) -> torch.Tensor:
    scale, offset = _k_scales(blocks)
    qh = blocks[:, 16:48]  # (n, 32): bit i of byte l is the 5th bit of weight l in sub-block i
    q = _nibbles(blocks[:, 48:].view(-1, 4, 32)).view(-1, 8, 32)
    shifts = torch.arange(8, dtype=torch.uint8).view(1, 8, 1)
    q |= ((qh.unsqueeze(1) >> shifts) & 1) << 4  # (n, 8, 32)
    return _affine(q, scale, offset).view(-1, 256)


def _q6_k(blocks: torch.Tensor) -> torch.Tensor:
    ql = _nibbles(blocks[:, :128].view(-1, 2, 64)).view(-1, 8, 32)  # low 4 bits
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8).view(1, 1, 4, 1)
    qh = ((blocks[:, 128:192].view(-1, 2, 1, 32) >> shifts) & 3).view(-1, 8, 32)  # high 2 bits
    q = (ql | (qh << 4)).view(torch.int8).sub_(32).view(-1, 16, 16)  # (n, 16 sub-blocks, 16)
    scale = _half(blocks, 208) * blocks[:, 192:208].view(torch.int8)  # (n, 16)
    return _affine(q, scale.unsqueeze(-1)).view(-1, 256)


IQ4_VALUES = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)  # kvalues_iq4nl


def _iq4_values(packed: torch.Tensor) -> torch.Tensor:
    """Nibbles (16 bytes per 32 weights, low nibbles first) -> table values as float32.  # (n, k) -> (n, 2k)"""
    table = torch.tensor(IQ4_VALUES, dtype=torch.float32)
    q = _nibbles(packed.reshape(-1, 16)).view(packed.shape[0], -1)  # per 16 bytes: lo then hi
    return table[q.long()]


def _iq4_nl(blocks: torch.Tensor) -> torch.Tensor:
    return _iq4_values(blocks[:, 2:]).mul_(_half(blocks, 0))


def _iq4_xs(blocks: torch.Tensor) -> torch.Tensor:
    sh = blocks[:, 2:4].contiguous().view(torch.int16).int() & 0xFFFF  # (n, 1)
    lo = _nibbles(blocks[:, 4:8]).transpose(1, 2).reshape(-1, 8).int()  # (n, 8): nibble j of scales_l
    hi = (sh >> torch.arange(0, 16, 2, dtype=torch.int32)) & 3  # (n, 8)
    scale = _half(blocks, 0) * ((lo | (hi << 4)) - 32).float()  # (n, 8) d * (ls - 32), as the reference
    return _iq4_values(blocks[:, 8:]).view(-1, 8, 32).mul_(scale.unsqueeze(-1)).view(-1, 256)


_BLOCK_DEQUANT: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Q8_0": _q8_0,
    "Q4_0": _q4_0,
    "Q4_1": _q4_1,
    "Q5_0": _q5_0,
    "Q4_K": _q4_k,
    "Q5_K": _q5_k,
    "Q6_K": _q6_k,
    "IQ4_NL": _iq4_nl,
    "IQ4_XS": _iq4_xs,
}
_FLOAT_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def type_name(ggml_type: int) -> str:
    """Human name of a ggml type id, also for types we cannot dequantize."""
    if ggml_type in GGML_TYPES:
        return GGML_TYPES[ggml_type][0]
    try:
        from gguf import GGMLQuantizationType

        return GGMLQuantizationType(ggml_type).name
    except ValueError:
        return f"type {ggml_type}"


def byte_size(ggml_type: int, num_elements: int) -> int | None:
    """Bytes that `num_elements` weights of this type take; None for a type id gguf does not know."""
    if ggml_type in GGML_TYPES:  # ours: no `gguf` import on the load path
        _, block_size, type_size = GGML_TYPES[ggml_type]
        return num_elements // block_size * type_size
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        return None
    return num_elements // block_size * type_size


def dequantize(raw: torch.Tensor, ggml_type: int, shape: tuple[int, ...], name: str = "?") -> torch.Tensor:
    """Raw bytes of one tensor -> a new float32 tensor of `shape` (torch order, row-major).

    raw: 1-D uint8 tensor holding exactly this tensor's bytes (it may be a view of a mapped file;
    the result never aliases it).
    """
    if ggml_type not in GGML_TYPES:
        supported = ", ".join(n for n, _, _ in GGML_TYPES.values())
        raise ModelFormatError(
            f"tensor {name!r} is stored as {type_name(ggml_type)}, which athanor cannot load; supported: {supported}"
        )
    type_, block_size, type_size = GGML_TYPES[ggml_type]
    numel = 1
    for dim in shape:
        numel *= dim
    if numel % block_size or raw.numel() != numel // block_size * type_size:
        raise ModelFormatError(
            f"tensor {name!r} ({type_}, shape {list(shape)}) has {raw.numel()} bytes, which does not fit"
        )
    if type_ in _FLOAT_DTYPES:
        out = raw.view(_FLOAT_DTYPES[type_])
        out = out.clone() if type_ == "F32" else out.float()
    else:
        out = _BLOCK_DEQUANT[type_](raw.view(-1, type_size))
    return out.reshape(shape)
