"""The Llama family's fused decode stack (nn/cpu_ops.c atho_decode_layers) over a GGUF file's own blocks: a tiny
random Llama (q/k rows permuted as convert_hf_to_gguf writes them) and a tiny Qwen2 (q/k/v biases), written with
gguf-py's GGUFWriter, each projection in another type (Q4_0, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS; the
parts of one projection mixed), decode through one C call per step and give the per-op path's logits bit for bit
(the same kernels and operations); a request batched with others equals it alone. A file mixing Q4_1 matrices with
K-quants runs them all in the same stack, or Q4_1 with float activations where the plan asks for it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from athanor.nn import cpu_ops, gguf_matmul
from tests.nn.gguf_tiny import tiny_writer

pytestmark = pytest.mark.skipif(not (gguf_matmul.available() and cpu_ops.available()), reason="no C kernels here")

HIDDEN, FFN, LAYERS, HEADS, KV_HEADS, VOCAB = 256, 512, 2, 4, 2, 256
Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS = 2, 3, 6, 8, 12, 13, 14, 20, 23
# per layer: GGUF matrix -> ggml type; q/k/v and gate/up mix types inside one fused projection
LAYER_TYPES = [
    {"attn_q": Q4_K, "attn_k": Q8_0, "attn_v": Q6_K, "attn_output": Q5_0, "ffn_gate": IQ4_XS, "ffn_up": Q4_0,
     "ffn_down": Q5_K},
    {"attn_q": IQ4_NL, "attn_k": Q5_K, "attn_v": Q4_0, "attn_output": Q6_K, "ffn_gate": Q8_0, "ffn_up": Q4_K,
     "ffn_down": IQ4_XS},
]


def _shape(name: str) -> tuple[int, int]:
    kv = HIDDEN // HEADS * KV_HEADS
    return {"attn_q": (HIDDEN, HIDDEN), "attn_k": (kv, HIDDEN), "attn_v": (kv, HIDDEN),
            "attn_output": (HIDDEN, HIDDEN), "ffn_gate": (FFN, HIDDEN), "ffn_up": (FFN, HIDDEN),
            "ffn_down": (HIDDEN, FFN)}[name]


def _blocks(ggml_type: int, out_f: int, in_f: int, rng: np.random.Generator) -> np.ndarray:
    """(rows, bytes per row): gguf-py's quantizer for the 32-blocks it has, else random valid blocks whose scales
    give weights of std ~0.05 (every nibble and 6-bit scale pattern)."""
    import gguf

    if ggml_type in (Q4_0, Q4_1, Q5_0, Q8_0):
        w = (rng.standard_normal((out_f, in_f)) * 0.05).astype(np.float32)
        return gguf.quants.quantize(w, gguf.GGMLQuantizationType(ggml_type))
    _, bw, bb = gguf_matmul.GGUF_KERNEL_TYPES[ggml_type]
    raw = rng.integers(0, 256, size=(out_f * in_f // bw, bb), dtype=np.uint8)
    scale = {Q4_K: 4e-4, Q5_K: 2e-4, Q6_K: 2e-4, IQ4_NL: 8e-4, IQ4_XS: 4e-5}[ggml_type]
    d = (rng.uniform(0.5, 1.5, size=(raw.shape[0], 1)) * scale).astype(np.float16).view(np.uint8)
    for off in ([208] if ggml_type == Q6_K else [0, 2] if ggml_type in (Q4_K, Q5_K) else [0]):
        raw[:, off : off + 2] = d
    return raw.reshape(out_f, -1)


def _write(path: Path, arch: str, layer_types: list[dict[str, int]]) -> Path:
    """A tiny model in `arch` ("llama" or "qwen2"): byte-level vocabulary, F32 norms (and Qwen2's biases), a Q8_0
    token table and a Q6_K head, every layer matrix in its type."""
    import gguf

    rng = np.random.default_rng(0)
    w = tiny_writer(path, arch, gguf.LlamaFileType.MOSTLY_Q4_K_M, layers=LAYERS, hidden=HIDDEN, ffn=FFN, heads=HEADS, kv_heads=KV_HEADS)
    for name in ["output_norm", *(f"blk.{i}.{n}" for i in range(LAYERS) for n in ("attn_norm", "ffn_norm"))]:
        w.add_tensor(f"{name}.weight", (1 + 0.2 * rng.standard_normal(HIDDEN)).astype(np.float32))
    matrices = {"token_embd": (Q8_0, VOCAB, HIDDEN), "output": (Q6_K, VOCAB, HIDDEN)}
    for i, types in enumerate(layer_types):
        matrices |= {f"blk.{i}.{n}": (t, *_shape(n)) for n, t in types.items()}
        if arch == "qwen2":
            for n in ("attn_q", "attn_k", "attn_v"):
                w.add_tensor(f"blk.{i}.{n}.bias", (0.1 * rng.standard_normal(_shape(n)[0])).astype(np.float32))
    for name, (t, out_f, in_f) in matrices.items():
        w.add_tensor(f"{name}.weight", _blocks(t, out_f, in_f, rng), raw_dtype=gguf.GGMLQuantizationType(t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _model(path: Path, plan: dict):
    from athanor.models.gguf import load_gguf
    from athanor.nn.llama import build_model

    ckpt = load_gguf(path, keep_blocks=True)
    return build_model(ckpt.config, ckpt.tensors, quant=plan)


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model(request, tmp_path_factory):
    path = _write(tmp_path_factory.mktemp("stack") / f"tiny-{request.param}.gguf", request.param, LAYER_TYPES)
    return _model(path, {"blocks": True})


def _per_op(model, seqs):
    from tests.nn.test_gemma_ops import _decode_all

    stack = model.decode_stack
    try:
        model.decode_stack = None
        return _decode_all(model, seqs)
    finally:
        model.decode_stack = stack


def test_every_projection_stays_in_its_blocks_and_takes_the_stack(model):
    from athanor.nn.gguf_matmul import BlockParts

    assert model.decode_stack is not None
    qkv = model.layers[0].self_attn.qkv_proj
    assert isinstance(qkv.qweight, BlockParts) and [p.type_name for p in qkv.qweight.parts] == ["Q4_K", "Q8_0", "Q6_K"]
    permuted = model.config.arch == "llama"  # llama.cpp's q/k row order, undone by the stack's column gather
    assert (qkv.qweight.parts[0].row_order is not None) == permuted
    assert (qkv.bias is not None) == (not permuted)


def test_fused_stack_gives_the_per_op_logits_bit_for_bit(model):
    from tests.nn.test_gemma_ops import _decode_all

    ids = torch.randint(0, VOCAB, (20,), generator=torch.Generator().manual_seed(1)).tolist()
    (fused,) = _decode_all(model, [ids])
    (per_op,) = _per_op(model, [ids])
    assert fused.shape == (19, VOCAB) and fused.abs().max() > 0
    assert torch.equal(fused, per_op)


def test_batched_decode_equals_each_sequence_alone(model):
    from tests.nn.test_gemma_ops import _decode_all

    gen = torch.Generator().manual_seed(2)
    seqs = [torch.randint(0, VOCAB, (n,), generator=gen).tolist() for n in (12, 5, 9)]
    together = _decode_all(model, seqs)
    for ids, got in zip(seqs, together):
        (alone,) = _decode_all(model, [ids])
        assert torch.equal(got, alone)
    assert all(torch.equal(a, b) for a, b in zip(together, _per_op(model, seqs)))


def test_q4_1_blocks_mix_with_gguf_blocks_in_one_stack_or_run_float_activations(tmp_path, monkeypatch):
    """Q4_1 matrices next to K-quants: under the engine's plan for such a file ({"blocks": True}) Q4_1 keeps its own
    blocks with int8 activations like the rest, all in one stack, which gives the per-op path's logits bit for bit.
    Under a float-activation plan (--weights q4_1: {"linear": "q4_1", ...}) its blocks are read in place (views of
    the file, llama.REPACK_IN_PLACE) or re-packed (nn/quant.py); both ways give the same logits bit for bit."""
    from athanor.nn import llama
    from athanor.nn.gguf_matmul import BlockParts
    from athanor.nn.quant import QuantizedWeight
    from tests.nn.test_gemma_ops import _decode_all

    types = [dict(LAYER_TYPES[0], ffn_down=Q4_1),  # one Q4_1 matrix; then fused ones (q/k rows permuted)
             dict(LAYER_TYPES[1], attn_q=Q4_1, attn_k=Q4_1, attn_v=Q4_1, ffn_gate=Q4_1, ffn_up=Q4_1)]
    path = _write(tmp_path / "tiny-mixed.gguf", "llama", types)
    ids = torch.randint(0, VOCAB, (10,), generator=torch.Generator().manual_seed(4)).tolist()
    model = _model(path, {"blocks": True})
    down, fused = model.layers[0].mlp.down_proj.qweight, model.layers[1].self_attn.qkv_proj.qweight
    assert isinstance(down, BlockParts) and down.parts[0].type_name == "Q4_1" and not down.parts[0].float_activations
    assert [p.type_name for p in fused.parts] == ["Q4_1"] * 3
    assert model.decode_stack is not None
    (native,) = _decode_all(model, [ids])
    (per_op,) = _per_op(model, [ids])
    assert native.abs().max() > 0 and torch.equal(native, per_op)
    got = {}
    for in_place in (True, False):
        monkeypatch.setattr(llama, "REPACK_IN_PLACE", "all" if in_place else "none")
        model = _model(path, {"linear": "q4_1", "lm_head": "q8_0"})
        down = model.layers[0].mlp.down_proj.qweight
        if in_place:
            assert isinstance(down, BlockParts) and down.parts[0].float_activations
        else:
            assert isinstance(down, QuantizedWeight)
        (got[in_place],) = _decode_all(model, [ids])
    assert torch.equal(got[True], got[False])
