"""Quantized matmul kernels (athanor.nn.quant): GGUF-exact quantization, both activation modes (fp32, int8)
against a float64 reference and SmolLM2's own weights, row independence across batch sizes and threads,
edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from athanor import cbuild
from athanor.nn import quant

# They run wherever they can be built (a compiler and an AVX2 CPU); there a build failure fails the tests below.
_CANNOT_BUILD = cbuild.cpu_reason() or (None if cbuild.compiler() else "no C compiler (cc, gcc or $CC)")
pytestmark = pytest.mark.skipif(_CANNOT_BUILD is not None, reason=f"quantized kernels: {_CANNOT_BUILD}")


def test_kernels_build_where_a_compiler_exists():
    assert quant.available(), quant.unavailable_reason()

KINDS = ["q4_1", "q8_0"]
MODES = ["f32", "int8"]


def _weight(out_features: int, in_features: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_features, in_features, generator=g) * 0.05
    w[0, :32] = 0.0  # an all-zero block: d = 0
    w[1, :32] = 0.25  # a constant block: q4_1 range 0
    w[2, 32:64] = -w[2, 32:64].abs()  # a block with no positive value
    return w


def _x(M: int, K: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(M, K, generator=torch.Generator().manual_seed(seed)) * 2


def _xhat(x: torch.Tensor) -> torch.Tensor:
    """float64 values the kernel multiplies for x: int8 q times the block scale."""
    q, d, _ = quant.quantize_activations(x)
    M, K = x.shape
    return (q.double().view(M, -1, 32) * d.double().unsqueeze(-1)).view(M, K)


@pytest.mark.parametrize("kind", KINDS)
def test_quantize_is_gguf_reference_byte_for_byte(kind):
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    w = _weight(64, 160)
    ref = quantize(w.numpy(), GGMLQuantizationType.Q4_1 if kind == "q4_1" else GGMLQuantizationType.Q8_0)
    qw = quant.QuantizedWeight.quantize(w, kind)
    assert np.array_equal(qw.to_gguf().numpy().reshape(-1), ref.reshape(-1))
    assert torch.equal(quant.QuantizedWeight.from_gguf(torch.from_numpy(ref).view(-1), kind, 64, 160).blocks, qw.blocks)
    assert qw.nbytes == ref.size == 64 * 160 // 32 * (20 if kind == "q4_1" else 34)


@pytest.mark.parametrize("kind", KINDS)
def test_requantizing_dequantized_weights_is_idempotent(kind):
    qw = quant.QuantizedWeight.quantize(_weight(96, 576, seed=3) * 7, kind)
    again = quant.QuantizedWeight.quantize(qw.dequantize(), kind)
    assert torch.equal(again.blocks, qw.blocks)


def test_builtin_gguf_tensors_requantize_exactly(smollm2_path):
    """The GGUF loader dequantizes Q4_1/Q8_0; quantizing its output must give back the file's blocks."""
    from athanor.models.gguf import read_gguf_header

    header = read_gguf_header(smollm2_path)
    kinds = {3: "q4_1", 8: "q8_0"}  # ggml type ids
    for name in ("blk.0.ffn_down.weight", "blk.29.attn_q.weight", "token_embd.weight"):
        info = header.tensors[name]
        kind, (out_features, in_features) = kinds[info.ggml_type], info.shape
        rows = min(out_features, 1024)  # the first rows are plenty
        with open(smollm2_path, "rb") as f:
            f.seek(info.offset)
            raw = torch.frombuffer(bytearray(f.read(info.nbytes // out_features * rows)), dtype=torch.uint8)
        qw = quant.QuantizedWeight.from_gguf(raw, kind, rows, in_features)
        assert torch.equal(qw.to_gguf().view(-1), raw)
        again = quant.QuantizedWeight.quantize(qw.dequantize(), kind)
        assert torch.equal(again.blocks, qw.blocks), name


def test_activation_quantization_is_round_half_even_of_x_over_scale():
    x = _x(5, 96)
    x[0, :32] = 0.0
    q, d, s = quant.quantize_activations(x)
    xb = x.view(5, 3, 32)
    d_ref = xb.abs().amax(-1) / 127  # (5, 3)
    inv = torch.where(d_ref != 0, 1 / d_ref, torch.zeros_like(d_ref))
    q_ref = torch.round(xb * inv.unsqueeze(-1)).to(torch.int8)  # torch.round: half to even, like the kernel
    assert torch.equal(d, d_ref)
    assert torch.equal(q.view(5, 3, 32), q_ref)
    assert q.abs().max() <= 127
    assert torch.equal(s, d * q.view(5, 3, 32).sum(-1).float())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("K,N", [(32, 5), (96, 37), (576, 131)])
def test_int8_kernel_matches_float64_reference(kind, K, N):
    """Tight: against the exact product of the int8 activations and dequantize(); loose: against x itself,
    within the activation-rounding bound |x_j - x̂_j| <= amax_b/254, so |err_o| <= sum_b amax_b/254 * sum_b |w_oj|."""
    qw = quant.QuantizedWeight.quantize(_weight(N, K), kind)
    w64 = qw.dequantize().double()  # (N, K)
    x = _x(13, K)
    bias = torch.randn(N)
    y = quant.qmatmul(x, qw, bias, activations="int8").double()
    scale = _xhat(x).abs() @ w64.abs().T + bias.double().abs()  # (M, N) sum of |terms|
    exact = _xhat(x) @ w64.T + bias.double()
    assert ((y - exact).abs() <= 1e-5 * scale + 1e-30).all()  # fp32 accumulation only

    amax_b = x.double().view(13, -1, 32).abs().amax(-1)  # (M, K/32)
    w_abs_b = w64.abs().view(N, -1, 32).sum(-1)  # (N, K/32)
    bound = amax_b / 254 @ w_abs_b.T  # (M, N)
    err = (y - (x.double() @ w64.T + bias.double())).abs()
    assert (err <= bound * 1.001 + 1e-5 * scale).all()
    assert err.max() > 0  # activations really are quantized: this is not the float path


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("K,N", [(32, 5), (96, 37), (576, 131)])
def test_f32_kernel_matches_float64_reference(kind, K, N):
    """fp32 activations: only fp32 rounding remains, |err| <= 1e-6 * sum of |terms| (measured ~1.3e-7), where
    int8 activations are off by ~1e-3; the default mode is this one."""
    qw = quant.QuantizedWeight.quantize(_weight(N, K), kind)
    w64 = qw.dequantize().double()
    x = _x(13, K)
    bias = torch.randn(N)
    y = quant.qmatmul(x, qw, bias)
    assert torch.equal(y, quant.qmatmul(x, qw, bias, activations="f32"))
    exact = x.double() @ w64.T + bias.double()
    scale = x.double().abs() @ w64.abs().T + bias.double().abs()
    err = (y.double() - exact).abs()
    assert (err <= 1e-6 * scale).all()
    assert ((y.double() - exact).norm() / exact.norm()).item() < 1e-6
    int8_err = (quant.qmatmul(x, qw, bias, activations="int8").double() - exact).abs()
    assert int8_err.max() > 100 * err.max()  # the two modes really are different computations


def test_f32_matches_smollm2_checkpoint_weights(smollm2_path):
    """Real SmolLM2 tensors (the file's Q4_1 / Q8_0 blocks, unchanged): f32-mode qmatmul vs float32 x @ W.T of
    the weights the GGUF loader dequantizes, within 1e-5 relative."""
    from athanor.models.gguf import read_gguf_header
    from athanor.nn.dequant import dequantize

    header = read_gguf_header(smollm2_path)
    kinds = {3: "q4_1", 8: "q8_0"}
    seen = set()
    g = torch.Generator().manual_seed(5)
    for name in ("blk.0.attn_q.weight", "blk.7.ffn_down.weight", "blk.29.ffn_gate.weight", "token_embd.weight"):
        info = header.tensors[name]
        kind, (out_features, in_features) = kinds[info.ggml_type], info.shape
        rows = min(out_features, 4096)  # the LM head's first rows are plenty
        with open(smollm2_path, "rb") as f:
            f.seek(info.offset)
            raw = torch.frombuffer(bytearray(f.read(info.nbytes // out_features * rows)), dtype=torch.uint8)
        w = dequantize(raw, info.ggml_type, (rows, in_features), name)  # the checkpoint loader's float32 weights
        qw = quant.QuantizedWeight.from_gguf(raw, kind, rows, in_features)
        x = torch.randn(8, in_features, generator=g)
        y, ref = quant.qmatmul(x, qw), x @ w.T
        assert ((y - ref).norm() / ref.norm()).item() < 1e-5, name
        assert ((y - ref).abs() <= 1e-5 * (x.abs() @ w.abs().T)).all(), name
        assert torch.equal(quant.qmatmul(x[3:4], qw), y[3:4])
        seen.add(kind)
    assert seen == {"q4_1", "q8_0"}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("threads", [1, 2])
def test_rows_are_independent_of_batch_and_threads(kind, threads, mode):
    """Row i of the output, bit for bit, whatever M and the thread count (engine: alone == in a batch)."""
    qw = quant.QuantizedWeight.quantize(_weight(70, 192), kind)  # 70 rows: partial NR and OC tiles
    x = _x(20, 192)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = torch.cat([quant.qmatmul(x[i : i + 1], qw, activations=mode) for i in range(20)])
        torch.set_num_threads(threads)
        for M in list(range(1, 10)) + [20]:
            for start in (0, 20 - M):
                got = quant.qmatmul(x[start : start + M], qw, activations=mode)
                assert torch.equal(got, alone[start : start + M]), (M, start)
        assert torch.equal(quant.qmatmul(x, qw, num_threads=threads, activations=mode), alone)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("kind", KINDS)
def test_f32_rows_are_independent_for_wide_inputs(kind):
    """in_features > 768: the f32 kernel takes x in row tiles of 4 (to stay in L1) instead of 8; 25 blocks
    leave a partial group of scales."""
    qw = quant.QuantizedWeight.quantize(_weight(37, 800), kind)
    x = _x(12, 800)
    alone = torch.cat([quant.qmatmul(x[i : i + 1], qw) for i in range(12)])
    for M in (2, 3, 5, 8, 12):
        assert torch.equal(quant.qmatmul(x[:M], qw), alone[:M]), M
    exact = x.double() @ qw.dequantize().double().T
    assert ((alone.double() - exact).abs() <= 1e-6 * (x.double().abs() @ qw.dequantize().double().abs().T)).all()


@pytest.mark.parametrize("mode", MODES)
def test_non_contiguous_x_and_empty_batch(mode):
    qw = quant.QuantizedWeight.quantize(_weight(40, 64), "q4_1")
    wide = _x(12, 128)
    for x in (wide[:, ::2], wide[:, 64:], wide[::2, 32:96]):  # column stride 2; row stride 128; both
        assert torch.equal(quant.qmatmul(x, qw, activations=mode), quant.qmatmul(x.contiguous(), qw, activations=mode))
    assert quant.qmatmul(wide[:, ::2].double(), qw, activations=mode).dtype == torch.float32
    empty = quant.qmatmul(torch.empty(0, 64), qw, activations=mode)
    assert empty.shape == (0, 40)


def test_bad_shapes_are_clear_value_errors():
    with pytest.raises(ValueError, match="divisible by 32"):
        quant.QuantizedWeight.quantize(torch.randn(8, 50), "q4_1")
    with pytest.raises(ValueError, match="unknown quantization kind"):
        quant.QuantizedWeight.quantize(torch.randn(8, 64), "q5_0")
    with pytest.raises(ValueError, match="2-D"):
        quant.QuantizedWeight.quantize(torch.randn(64), "q8_0")
    qw = quant.QuantizedWeight.quantize(torch.randn(8, 64), "q8_0")
    with pytest.raises(ValueError, match=r"x must be \(M, 64\)"):
        quant.qmatmul(torch.randn(2, 32), qw)
    with pytest.raises(ValueError, match="bytes"):
        quant.QuantizedWeight(torch.zeros(10, dtype=torch.uint8), "q8_0", 8, 64)
    with pytest.raises(ValueError, match="activations must be one of f32, int8"):
        quant.qmatmul(torch.randn(2, 64), qw, activations="fp16")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_non_finite_x_spoils_its_row_only(kind, mode):
    """int8: the whole row is NaN (no silent saturation); f32: as float matmul, every output is inf or NaN."""
    qw = quant.QuantizedWeight.quantize(_weight(33, 96), kind)
    x = _x(4, 96)
    clean = quant.qmatmul(x, qw, activations=mode)
    x[1, 40], x[2, 95] = float("nan"), float("inf")
    y = quant.qmatmul(x, qw, activations=mode)
    if mode == "int8":
        assert y[1].isnan().all() and y[2].isnan().all()
    assert y[1].isnan().all() and not y[2].isfinite().any()
    assert torch.equal(y[[0, 3]], clean[[0, 3]])


@pytest.mark.parametrize("kind", KINDS)
def test_get_rows_is_dequantize_of_those_rows(kind):
    """The embedding lookup of a table kept in blocks: bit for bit the dequantized rows, any order, repeats."""
    w = quant.QuantizedWeight.quantize(_weight(40, 96), kind)
    ids = torch.tensor([[3, 0], [39, 3]])
    assert torch.equal(w.get_rows(ids), w.dequantize()[ids.reshape(-1)])
    assert w.get_rows(torch.tensor([], dtype=torch.long)).shape == (0, 96)
    with pytest.raises(IndexError):
        w.get_rows(torch.tensor([40]))


@pytest.mark.parametrize("kind", KINDS)
def test_from_gguf_parts_stacks_the_parts_as_one_weight(kind):
    """Parts of a fused matrix (q | k | v) given as GGUF bytes: the same weight as quantizing the stacked floats."""
    parts = [_weight(n, 64, seed=n) for n in (24, 8, 8)]
    raws = [quant.QuantizedWeight.quantize(p, kind).to_gguf() for p in parts]
    got = quant.QuantizedWeight.from_gguf_parts(raws, kind, 64)
    assert (got.out_features, got.in_features) == (40, 64)
    assert torch.equal(got.blocks, quant.QuantizedWeight.quantize(torch.cat(parts), kind).blocks)
    with pytest.raises(ValueError):
        quant.QuantizedWeight.from_gguf_parts([raws[0][:, :-1].contiguous()], kind, 64)
