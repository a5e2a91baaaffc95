"""GGUF block kernels (athanor.nn.gguf_matmul): Q4_0, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS matmuls and row
lookups against the `gguf` package's dequantize (llama.cpp's reference), AVX2 and portable builds, on random blocks
that exercise every bit pattern of the quants and packed scales."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from athanor.nn import gguf_matmul as gm

pytestmark = pytest.mark.skipif(not gm.available(), reason=f"no GGUF kernels: {gm.unavailable_reason()}")

TYPES = sorted(gm.GGUF_KERNEL_TYPES)  # ggml ids
# byte offsets of the f16 scales (d, dmin) inside a block
HALF_OFFSETS = {2: [0], 3: [0, 2], 6: [0], 8: [0], 12: [0, 2], 13: [0, 2], 14: [208], 20: [0], 23: [0]}


def _random_blocks(ggml_type: int, out_features: int, in_features: int, seed: int = 0) -> np.ndarray:
    """Random bytes for every quant and packed-scale bit, with finite small f16 d / dmin."""
    _, bw, bb = gm.GGUF_KERNEL_TYPES[ggml_type]
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(out_features * in_features // bw, bb), dtype=np.uint8)
    for off in HALF_OFFSETS[ggml_type]:
        d = rng.uniform(0.001, 0.05, size=(raw.shape[0], 1)).astype(np.float16)
        raw[:, off : off + 2] = d.view(np.uint8)
    raw[0, HALF_OFFSETS[ggml_type][0] : HALF_OFFSETS[ggml_type][0] + 2] = 0  # a block with d = 0
    return raw.reshape(out_features, -1)


def _reference_weight(raw: np.ndarray, ggml_type: int, shape) -> torch.Tensor:
    import gguf

    return torch.from_numpy(gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(ggml_type)).copy()).reshape(shape)


def _xhat(x: torch.Tensor, block: int) -> torch.Tensor:
    """The activations the kernel multiplies: per block scale amax/127, int8 round-half-even, as float64."""
    M, K = x.shape
    xb = x.view(M, K // block, block)
    d = xb.abs().amax(-1, keepdim=True) / 127  # float32, like the C code
    inv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    q = torch.round(xb * inv)
    return (q.double() * d.double()).view(M, K)


BUILDS = ["avx2", "vnni", "portable"]


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("group", [32, 256])
def test_activation_quantization_is_the_formula_bit_for_bit(group, build):
    """The vectorized (AVX2) and plain quantizers both give round-half-even(x / (amax / 127)) per group, the scale,
    and the int16 sums per 16; a group holding inf or NaN gets a NaN scale; threads split rows, nothing else."""
    kw = _build(build)
    M, K = 130, 1024  # M * K past the size where rows are quantized by two threads
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(6)) * 3
    x[0, :group] = 0.0                      # an all-zero group: scale 0, quants 0
    x[1, 5], x[2, group + 7] = float("inf"), float("nan")
    x[3, :group] = 0.0                      # amax 127: scale 1, so these halves stay halves
    x[3, :8] = torch.tensor([0.5, -0.5, 1.5, -2.5, 127.0, -127.0, 63.5, 2.5])
    q, d, s = gm.quantize_activations(x, group, num_threads=2, **kw)
    xb = x.view(M, K // group, group)
    d_ref = xb.abs().amax(-1) / 127
    bad = ~torch.isfinite(xb).all(-1)
    assert torch.equal(d.isnan(), bad)
    assert torch.equal(d[~bad], d_ref[~bad])
    inv = torch.where(d_ref != 0, 1.0 / d_ref, torch.zeros_like(d_ref)).unsqueeze(-1)
    q_ref = torch.round(xb * inv).to(torch.int8).view(M, K)  # torch.round: half to even, like nearbyintf
    good = (~bad).repeat_interleave(group, dim=1)
    assert torch.equal(q[good], q_ref[good])
    assert torch.equal(s[good[:, ::16]], q.view(M, K // 16, 16).sum(-1, dtype=torch.int32).to(torch.int16)[good[:, ::16]])
    assert torch.equal(q[3, :8], torch.tensor([0, 0, 2, -2, 127, -127, 64, 2], dtype=torch.int8))
    one, d1, s1 = gm.quantize_activations(x[:1], group, num_threads=1, **kw)  # a row alone is the same row
    assert torch.equal(one, q[:1]) and torch.equal(d1, d[:1]) and torch.equal(s1, s[:1])


def _build(build: str) -> dict:
    if build == "vnni" and not gm.vnni_supported():
        pytest.skip("this CPU has no AVX512-VNNI")
    return {"portable": True} if build == "portable" else {"isa": build}


@pytest.mark.parametrize("M", [5, 19], ids=["M5", "M19"])  # 19: two full 8-row tiles (their own compiled loop) + 3
@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("ggml_type", TYPES, ids=[gm.GGUF_KERNEL_TYPES[t][0] for t in TYPES])
def test_matmul_matches_dequantize_then_matmul(ggml_type, build, M):
    name, bw, _ = gm.GGUF_KERNEL_TYPES[ggml_type]
    N, K = 67, 512
    raw = _random_blocks(ggml_type, N, K)
    w_ref = _reference_weight(raw, ggml_type, (N, K))  # (N, K) float32
    w = gm.GGUFWeight(torch.from_numpy(raw).reshape(-1), ggml_type, N, K)
    assert torch.equal(w.dequantize(), w_ref)  # athanor's dequant agrees bit for bit with gguf's
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(1)) * 2
    x[1, :bw] = 0.0  # an all-zero activation block
    bias = torch.randn(N)
    y = gm.gguf_matmul(x, w, bias, **_build(build))
    # 1. tight: the kernel computes xhat @ W^T exactly up to fp32 accumulation
    exact = _xhat(x, bw) @ w_ref.double().T + bias.double()
    scale = (_xhat(x, bw).abs() @ w_ref.double().abs().T).clamp_min(1e-6)
    assert ((y.double() - exact).abs() / scale).max() < 1e-5, name
    # 2. against the unquantized x: within the activation rounding bound sum_j |W_oj| dx_b(j) / 2
    ref = x.double() @ w_ref.double().T + bias.double()
    dx = (x.abs().view(M, -1, bw).amax(-1) / 127).double()  # (M, K/bw)
    bound = (w_ref.abs().double().view(1, N, -1, bw).sum(-1) * dx.view(M, 1, -1)).sum(-1) / 2
    assert ((y.double() - ref).abs() <= bound * 1.001 + 1e-5).all(), name


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("ggml_type", TYPES, ids=[gm.GGUF_KERNEL_TYPES[t][0] for t in TYPES])
@pytest.mark.parametrize("N", [40, 300])
def test_rows_are_independent_of_batch_and_threads(ggml_type, build, N):
    """Row tiles of 8 (AVX2: 4) x rows share each weight block's decoding: 9 rows = tiles 8 + 1 (4 + 4 + 1); odd
    block counts exercise the two-accumulator loop's tail. 300 outputs: a prefill's items are runs of ~16 KiB of
    weight rows (up to 64) shared out between the threads."""
    kw = _build(build)
    K = 768 if ggml_type >= 12 else 96
    w = gm.GGUFWeight(torch.from_numpy(_random_blocks(ggml_type, N, K, seed=3)).reshape(-1), ggml_type, N, K)
    x = torch.randn(9, K, generator=torch.Generator().manual_seed(2))
    full = gm.gguf_matmul(x, w, num_threads=2, **kw)
    for i in (0, 4, 5, 8):
        assert torch.equal(gm.gguf_matmul(x[i : i + 1], w, num_threads=1, **kw), full[i : i + 1])
    for lo, hi in ((1, 7), (3, 9)):
        assert torch.equal(gm.gguf_matmul(x[lo:hi], w, num_threads=2, **kw), full[lo:hi])
    assert torch.equal(gm.gguf_matmul(x, w, num_threads=1, **kw), full)


@pytest.mark.parametrize("ggml_type", TYPES, ids=[gm.GGUF_KERNEL_TYPES[t][0] for t in TYPES])
def test_vnni_and_avx2_builds_agree_bit_for_bit(ggml_type):
    """vpdpbusd and maddubs + madd add the same four products per int32 lane: the same integers, same floats. The VNNI
    build also moves Q4_0/Q5_0's offsets and Q8_0's sign into the lanes' starting values (unsigned weights against x,
    x + 128 against signed weights) and the K-quants' scale products into vpdpwssd: still the same integers. 21 rows:
    two full 8-row tiles (register-resident accumulators), a tile of 5, and a row alone."""
    _build("vnni")
    N, K = 33, 512
    w = gm.GGUFWeight(torch.from_numpy(_random_blocks(ggml_type, N, K, seed=5)).reshape(-1), ggml_type, N, K)
    x = torch.randn(21, K, generator=torch.Generator().manual_seed(4)) * 3
    x[2, :64] = 0.0
    for rows in (x[:6], x, x[20:]):
        assert torch.equal(gm.gguf_matmul(rows, w, isa="vnni"), gm.gguf_matmul(rows, w, isa="avx2"))


@pytest.mark.parametrize("portable", [False, True], ids=["avx2", "portable"])
@pytest.mark.parametrize("ggml_type", TYPES, ids=[gm.GGUF_KERNEL_TYPES[t][0] for t in TYPES])
def test_get_rows_is_the_reference_dequantize(ggml_type, portable):
    N, K = 20, 512
    raw = _random_blocks(ggml_type, N, K, seed=5)
    w = gm.GGUFWeight(torch.from_numpy(raw).reshape(-1), ggml_type, N, K)
    ids = torch.tensor([19, 0, 7, 7])
    assert torch.equal(gm.get_rows(w, ids, portable=portable), _reference_weight(raw, ggml_type, (N, K))[ids])
    with pytest.raises(IndexError):
        gm.get_rows(w, torch.tensor([20]))


def test_quantized_by_gguf_package_round_trip():
    """Weights quantized by gguf-py (Q4_0, Q4_1, Q5_0, Q8_0): the kernel's product approximates the float one."""
    import gguf

    w = torch.randn(48, 256, generator=torch.Generator().manual_seed(7))
    x = torch.randn(3, 256, generator=torch.Generator().manual_seed(8))
    for t in (gguf.GGMLQuantizationType.Q4_0, gguf.GGMLQuantizationType.Q4_1, gguf.GGMLQuantizationType.Q5_0,
              gguf.GGMLQuantizationType.Q8_0):
        raw = gguf.quants.quantize(w.numpy(), t)
        gw = gm.GGUFWeight(torch.from_numpy(raw.copy()).reshape(-1), int(t), 48, 256)
        rel = (gm.gguf_matmul(x, gw) - x @ w.T).norm() / (x @ w.T).norm()
        assert rel < {"Q4_0": 0.12, "Q4_1": 0.12, "Q5_0": 0.06, "Q8_0": 0.02}[t.name], (t.name, float(rel))


def test_bad_shapes_are_value_errors():
    with pytest.raises(ValueError, match="divisible by 256"):
        gm.GGUFWeight(torch.zeros(144, dtype=torch.uint8), 12, 1, 128)
    with pytest.raises(ValueError, match="must be"):
        gm.GGUFWeight(torch.zeros(10, dtype=torch.uint8), 8, 1, 32)
    with pytest.raises(ValueError, match="no block kernel"):
        gm.GGUFWeight(torch.zeros(20, dtype=torch.uint8), 99, 1, 32)
    w = gm.GGUFWeight(torch.zeros(34, dtype=torch.uint8), 8, 1, 32)
    with pytest.raises(ValueError, match="x must be"):
        gm.gguf_matmul(torch.zeros(2, 64), w)


@pytest.mark.parametrize("build", ["avx2", "vnni"])
def test_block_parts_in_one_call_equal_each_part_alone(build):
    """q | k | v of mixed types (as a Q4_K_M file mixes them): x quantized once per block size and one loop
    over all rows gives each part's own product, bit for bit."""
    kw = _build(build)
    K = 512
    parts = [gm.GGUFWeight(torch.from_numpy(_random_blocks(t, n, K, seed=t)).reshape(-1), t, n, K)
             for t, n in ((6, 48), (12, 17), (8, 40), (14, 9), (2, 3), (20, 11), (23, 13), (3, 21))]
    x = torch.randn(6, K, generator=torch.Generator().manual_seed(7))
    bias = torch.randn(sum(p.out_features for p in parts))
    got = gm.BlockParts(parts).matmul(x, bias, **kw)
    want = torch.cat([gm.gguf_matmul(x, p, **kw) for p in parts], dim=1) + bias
    assert torch.equal(got, want)
    assert torch.equal(gm.BlockParts(parts).matmul(x[2:3], bias, **kw), want[2:3])


@pytest.mark.parametrize("kind", ["q4_1", "q8_0"])
@pytest.mark.parametrize("in_features", [96, 576])  # 3 and 18 blocks a row: a partial group of 8 scales
def test_float_activations_in_gguf_layout_equal_the_repacked_kernel(kind, in_features):
    """Q4_1 / Q8_0 blocks read where they lie (GGUF's layout, nn/qkernels.c kinds 2/3) give nn/quant.py's re-packed
    products bit for bit, for every batch size's tiling, with a bias, and the row lookup its get_rows."""
    import gguf

    from athanor.nn import quant

    if not quant.available():
        pytest.skip("no quantized kernels")
    ggml_type = {"q4_1": 3, "q8_0": 8}[kind]
    out_f = 37  # not a multiple of the 4-row tiles
    w = torch.randn(out_f, in_features, generator=torch.Generator().manual_seed(5)) * 0.05
    raw = torch.from_numpy(gguf.quants.quantize(w.numpy(), gguf.GGMLQuantizationType(ggml_type)))
    blocks = gm.GGUFWeight(raw.reshape(-1), ggml_type, out_f, in_features).with_float_activations()
    repacked = quant.QuantizedWeight.from_gguf(raw.reshape(-1), kind, out_f, in_features)
    bias = torch.randn(out_f)
    for M in (1, 2, 3, 5, 8, 9, 17):
        x = torch.randn(M, in_features, generator=torch.Generator().manual_seed(M))
        want = quant.qmatmul(x, repacked, bias)
        assert torch.equal(gm.gguf_matmul(x, blocks, bias), want), M
        assert torch.equal(gm.gguf_matmul(x, blocks, num_threads=1), quant.qmatmul(x, repacked)), M
    ids = torch.tensor([0, 36, 5, 5])
    assert torch.equal(gm.get_rows(blocks, ids), repacked.get_rows(ids))
    # parts stacked along the output (q | k | v): one call over all of them, the same bits as the re-packed whole
    cut = [0, 20, 29, out_f]
    parts = gm.BlockParts([gm.GGUFWeight(raw[a:b].reshape(-1), ggml_type, b - a, in_features).with_float_activations()
                           for a, b in itertools.pairwise(cut)])
    x = torch.randn(3, in_features)
    assert torch.equal(parts.matmul(x, bias), quant.qmatmul(x, repacked, bias))
    with pytest.raises(ValueError, match="float-activation"):
        gm.GGUFWeight(raw.reshape(-1)[: 0], 2, 0, in_features).with_float_activations()
