"""A tiny random-weight Llama GGUF whose matrices are IQ4_NL / IQ4_XS blocks (written with gguf-py's GGUFWriter
from raw block bytes, as llama-quantize lays them out) loads with its blocks kept (views of the file, run by
nn/gguf_kernels.c) and gives the logits of the same model with those weights dequantized (gguf-py) to F32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from athanor.nn import gguf_matmul
from tests.nn.gguf_tiny import tiny_writer

pytestmark = pytest.mark.skipif(not gguf_matmul.available(), reason="no GGUF block kernels")

HIDDEN, FFN, LAYERS, HEADS, KV_HEADS, VOCAB = 256, 512, 2, 4, 2, 256
IQ4_NL, IQ4_XS = 20, 23
# GGUF matrix -> (ggml type, out_features, in_features); every kind of weight in both types across the layers
MATRICES = {
    "token_embd": (IQ4_NL, VOCAB, HIDDEN),  # the embedding lookup reads blocks too (get_rows)
    "output": (IQ4_XS, VOCAB, HIDDEN),
    **{f"blk.{i}.{name}": (t, out_f, in_f) for i in range(LAYERS) for name, t, out_f, in_f in (
        ("attn_q", IQ4_NL if i == 0 else IQ4_XS, HIDDEN, HIDDEN),
        ("attn_k", IQ4_XS if i == 0 else IQ4_NL, HIDDEN // HEADS * KV_HEADS, HIDDEN),
        ("attn_v", IQ4_NL, HIDDEN // HEADS * KV_HEADS, HIDDEN),
        ("attn_output", IQ4_XS, HIDDEN, HIDDEN),
        ("ffn_gate", IQ4_XS if i == 0 else IQ4_NL, FFN, HIDDEN),
        ("ffn_up", IQ4_NL if i == 0 else IQ4_XS, FFN, HIDDEN),
        ("ffn_down", IQ4_XS, HIDDEN, FFN))},
}


def _iq4_blocks(ggml_type: int, out_f: int, in_f: int, rng: np.random.Generator) -> np.ndarray:
    """Random valid blocks (every index and 6-bit scale pattern), d scaled so weights have std ~0.05."""
    _, bw, bb = gguf_matmul.GGUF_KERNEL_TYPES[ggml_type]
    raw = rng.integers(0, 256, size=(out_f * in_f // bw, bb), dtype=np.uint8)
    d = rng.uniform(0.5, 1.5, size=(raw.shape[0], 1)) * (8e-4 if ggml_type == IQ4_NL else 4e-5)
    raw[:, :2] = d.astype(np.float16).view(np.uint8)
    return raw.reshape(out_f, -1)  # (rows, bytes per row): GGUFWriter turns it into (rows, in_f) of raw_dtype


def _write(path: Path, matrices: dict[str, np.ndarray], file_type) -> Path:
    """llama metadata, a byte-level vocabulary of 256 tokens, F32 norms, the given matrices."""
    import gguf

    w = tiny_writer(path, "llama", file_type, layers=LAYERS, hidden=HIDDEN, ffn=FFN, heads=HEADS, kv_heads=KV_HEADS)
    rng = np.random.default_rng(1)
    norms = ["output_norm", *(f"blk.{i}.{n}" for i in range(LAYERS) for n in ("attn_norm", "ffn_norm"))]
    for name in norms:
        w.add_tensor(f"{name}.weight", (1 + 0.2 * rng.standard_normal(HIDDEN)).astype(np.float32))
    for name, data in matrices.items():
        if data.dtype == np.uint8:
            w.add_tensor(f"{name}.weight", data, raw_dtype=gguf.GGMLQuantizationType(MATRICES[name][0]))
        else:
            w.add_tensor(f"{name}.weight", data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """(the IQ4 file, the same model dequantized to F32, the raw blocks by GGUF name)."""
    import gguf

    rng = np.random.default_rng(0)
    raw = {name: _iq4_blocks(t, out_f, in_f, rng) for name, (t, out_f, in_f) in MATRICES.items()}
    floats = {name: gguf.quants.dequantize(r, gguf.GGMLQuantizationType(MATRICES[name][0])) for name, r in raw.items()}
    d = tmp_path_factory.mktemp("iq4")
    iq4 = _write(d / "tiny-iq4.gguf", raw, gguf.LlamaFileType.MOSTLY_IQ4_XS)
    f32 = _write(d / "tiny-f32.gguf", floats, gguf.LlamaFileType.ALL_F32)
    return iq4, f32, raw


def _logits(model, ids):
    from tests.nn.test_parity_tiny import full_logits

    with torch.no_grad():
        return full_logits(model, ids)


def test_blocks_are_kept_and_give_the_dequantized_models_logits(files):
    from athanor.engine.model_runner import memory_bytes
    from athanor.models.gguf import load_gguf
    from athanor.nn.gguf_matmul import BlockParts, GGUFWeight
    from athanor.nn.llama import build_model

    iq4, f32, raw = files
    ckpt = load_gguf(iq4, keep_blocks=True)
    assert ckpt.info["quantization"] == "IQ4_XS"
    held = {name: t for name, t in ckpt.tensors.items() if isinstance(t, GGUFWeight)}
    assert len(held) == len(MATRICES)  # every matrix stays in its blocks: none dequantized at load
    want_types = sorted(t for t, _, _ in MATRICES.values())
    assert sorted(w.ggml_type for w in held.values()) == want_types
    assert sum(w.nbytes for w in held.values()) == sum(r.nbytes for r in raw.values())  # the file's bytes, no more
    q0 = ckpt.tensors["model.layers.0.self_attn.q_proj.weight"]
    assert q0.type_name == "IQ4_NL" and torch.equal(q0.raw, torch.from_numpy(raw["blk.0.attn_q"]))
    model = build_model(ckpt.config, ckpt.tensors, quant={"blocks": True})
    for layer in model.layers:
        for lin in (layer.self_attn.qkv_proj, layer.self_attn.o_proj, layer.mlp.gate_up_proj, layer.mlp.down_proj):
            assert isinstance(lin.qweight, BlockParts) and lin.weight.numel() == 0
    assert model.layers[0].self_attn.qkv_proj.qweight.parts[1].type_name == "IQ4_XS"
    assert isinstance(model.embed_tokens.qweight, GGUFWeight) and model.embed_tokens.qweight.type_name == "IQ4_NL"
    assert isinstance(model.lm_head.qweight, BlockParts) and model.lm_head.qweight.parts[0].type_name == "IQ4_XS"
    assert max(p.numel() for p in model.parameters()) == HIDDEN  # float parameters: the norms only
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())  # RoPE tables
    norms = sum(p.numel() * p.element_size() for p in model.parameters())
    assert memory_bytes(model) == sum(r.nbytes for r in raw.values()) + norms + buffers

    ref_ckpt = load_gguf(f32)
    ref_model = build_model(ref_ckpt.config, ref_ckpt.tensors)
    ids = torch.randint(0, VOCAB, (24,), generator=torch.Generator().manual_seed(3)).tolist()
    ref, got = _logits(ref_model, ids), _logits(model, ids)
    # the same weights: the only difference is the blocks' int8 activations (with float activations the two models
    # agree bit for bit), ~3% of the logits' norm after two layers of this random model (measured: 0.030, KL 4e-4)
    rel = (got - ref).norm(dim=-1) / ref.norm(dim=-1)
    assert rel.max() < 0.06, rel.tolist()
    logp, logq = torch.log_softmax(ref, -1), torch.log_softmax(got, -1)
    kld = (logp.exp() * (logp - logq)).sum(-1)
    assert kld.max() < 2e-3, kld.tolist()
    # the float model's table is gguf-py's dequantization; the blocks' lookup (get_rows) gives the same rows
    import gguf

    table = torch.from_numpy(gguf.quants.dequantize(raw["token_embd"], gguf.GGMLQuantizationType.IQ4_NL))
    assert torch.equal(ref_model.embed_tokens.weight, table)
    assert torch.equal(model.embed_tokens(torch.tensor(ids)), table[ids])


def test_the_engine_keeps_the_blocks_and_decodes(files):
    """`weight_dtype` auto on an IQ4_XS file: blocks kept (as for K-quant files), greedy decoding runs and a
    request batched with another equals it alone."""
    from athanor.engine.config import EngineConfig
    from athanor.engine.sampling_params import SamplingParams
    from athanor.nn.gguf_matmul import BlockParts
    from athanor.runtime.llm import LLM

    iq4, _, _ = files
    llm = LLM.load(str(iq4), EngineConfig(kv_cache_bytes=4 * 2**20))
    model = llm.engine.runner.model
    assert isinstance(model.layers[1].mlp.down_proj.qweight, BlockParts)
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    prompts = [[5, 9, 200, 17], [3, 3, 250]]
    alone = [llm.generate_ids([p], params)[0].token_ids for p in prompts]
    assert all(len(t) == 8 for t in alone)
    assert [o.token_ids for o in llm.generate_ids(prompts, params)] == alone
