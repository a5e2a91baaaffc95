"""dequant.py against gguf.quants.dequantize (llama.cpp's numpy reference) on random blocks of every type."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as reference_dequantize

from athanor.errors import ModelFormatError
from athanor.nn.dequant import GGML_TYPES, dequantize

Q = GGMLQuantizationType
# byte offsets of the f16 scale fields in each block type: random bytes there could be inf/NaN
_HALF_FIELDS = {Q.Q8_0: (0,), Q.Q4_0: (0,), Q.Q4_1: (0, 2), Q.Q5_0: (0,), Q.Q4_K: (0, 2), Q.Q5_K: (0, 2),
               Q.Q6_K: (208,), Q.IQ4_NL: (0,), Q.IQ4_XS: (0,)}
_BLOCK_TYPES = tuple(_HALF_FIELDS)


def _random_rows(qtype: GGMLQuantizationType, rows: int, blocks_per_row: int, seed: int) -> np.ndarray:
    """Random bytes shaped (rows, bytes_per_row), with finite f16 scales (and finite floats for F16/BF16)."""
    rng = np.random.default_rng(seed)
    _, type_size = GGML_QUANT_SIZES[qtype]
    if qtype in (Q.F32, Q.F16, Q.BF16):
        values = rng.standard_normal((rows, blocks_per_row * 32)).astype(np.float32) * 3
        if qtype == Q.F16:
            return values.astype(np.float16).view(np.uint8)
        if qtype == Q.BF16:  # top half of each float32 (truncation): always finite here
            return (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
        return values.view(np.uint8)
    blocks = rng.integers(0, 256, size=(rows * blocks_per_row, type_size), dtype=np.uint8)
    for offset in _HALF_FIELDS[qtype]:
        halves = rng.uniform(-2, 2, size=len(blocks)).astype(np.float16)
        blocks[:, offset : offset + 2] = halves.view(np.uint8).reshape(-1, 2)
    return blocks.reshape(rows, -1)


@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.BF16, *_BLOCK_TYPES], ids=lambda q: q.name)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_gguf_reference(qtype: GGMLQuantizationType, seed: int) -> None:
    rows = _random_rows(qtype, rows=5, blocks_per_row=3, seed=seed)  # (5, bytes_per_row)
    expected = reference_dequantize(rows, qtype)  # (5, weights_per_row) float32
    raw = torch.from_numpy(rows.reshape(-1).copy())
    ours = dequantize(raw, int(qtype), tuple(expected.shape), "t")
    assert ours.dtype == torch.float32 and tuple(ours.shape) == expected.shape
    assert np.isfinite(expected).all()
    np.testing.assert_array_equal(ours.numpy(), expected)  # bit-exact: same float ops in the same order


def test_every_listed_type_is_tested() -> None:
    tested = {"F32", "F16", "BF16", *(q.name for q in _BLOCK_TYPES)}
    assert {name for name, _, _ in GGML_TYPES.values()} == tested


def test_3d_shape_and_no_aliasing() -> None:
    rows = _random_rows(Q.F32, rows=6, blocks_per_row=1, seed=3)
    raw = torch.from_numpy(rows.reshape(-1).copy())
    out = dequantize(raw, int(Q.F32), (2, 3, 32))
    expected = out.clone()
    raw.zero_()  # the result must be its own memory, not a view of the (mapped) file bytes
    assert torch.equal(out, expected) and out.shape == (2, 3, 32)


def test_unsupported_type_names_tensor_and_type() -> None:
    raw = torch.zeros(24, dtype=torch.uint8)  # one Q5_1 block
    with pytest.raises(ModelFormatError, match=r"blk\.0\.attn_q\.weight.*Q5_1"):
        dequantize(raw, int(Q.Q5_1), (32,), "blk.0.attn_q.weight")


def test_wrong_byte_count_is_a_format_error() -> None:
    raw = torch.zeros(33, dtype=torch.uint8)  # a Q8_0 block is 34 bytes
    with pytest.raises(ModelFormatError, match="does not fit"):
        dequantize(raw, int(Q.Q8_0), (32,), "w")
