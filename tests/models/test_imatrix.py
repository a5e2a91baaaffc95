"""Importance matrices: `athanor imatrix` collects llama-imatrix's statistics (parity with transformers' matmul
inputs, and with llama-imatrix itself where it is built), the file format round-trips (GGUF read back by the
`gguf` package, legacy .dat), and `athanor quantize --imatrix` uses it and records it as llama-quantize does.
The behavioural check (an imatrix from text lowers the KL divergence on held-out text) needs real weights:
tests/models/test_quantize_quality.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from athanor.cli import app
from athanor.errors import AthanorError
from athanor.models.imatrix_file import Entry, Imatrix, read_imatrix, write_dat, write_gguf

TEXT = "The capital of France is Paris. hello world, how are you? 数字 12345 and emoji 🙂 too. " * 12


def _run(args: list[str]):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def _sample() -> Imatrix:
    rng = np.random.default_rng(0)
    return Imatrix({"blk.0.attn_q.weight": Entry(rng.random((1, 64), dtype=np.float32) * 100, np.array([512.0])),
                    "blk.0.ffn_down.weight": Entry(rng.random((1, 128), dtype=np.float32), np.array([512.0]))},
                   datasets=["calib.txt"], chunk_count=4, chunk_size=128)


def test_gguf_format_round_trips_and_reads_back_with_gguf(tmp_path):
    import gguf

    im = _sample()
    write_gguf(im, tmp_path / "im.gguf")
    reader = gguf.GGUFReader(tmp_path / "im.gguf")
    assert reader.get_field("general.type").contents() == "imatrix"
    assert reader.get_field("general.architecture") is None
    assert reader.get_field("imatrix.datasets").contents() == ["calib.txt"]
    assert reader.get_field("imatrix.chunk_count").contents() == 4
    assert reader.get_field("imatrix.chunk_size").contents() == 128
    tensors = {t.name: t for t in reader.tensors}
    assert list(tensors["blk.0.attn_q.weight.in_sum2"].shape) == [64, 1]  # ne = [columns, n_mat]
    assert list(tensors["blk.0.attn_q.weight.counts"].shape) == [1, 1]
    assert {t.tensor_type.name for t in reader.tensors} == {"F32"}
    back = read_imatrix(tmp_path / "im.gguf")
    assert not back.legacy and back.chunk_count == 4 and back.datasets == ["calib.txt"]
    for name, e in im.entries.items():
        np.testing.assert_array_equal(back.entries[name].sums, e.sums)
        np.testing.assert_array_equal(back.weights(name), e.sums[0] / 512)


def test_legacy_dat_round_trips_the_importance(tmp_path):
    im = _sample()
    write_dat(im, tmp_path / "im.dat")
    back = read_imatrix(tmp_path / "im.dat")
    assert back.legacy and back.chunk_count == 4 and back.datasets == ["calib.txt"]
    for name, e in im.entries.items():  # stored as mean * ncall (ncall = 512 / 128 = 4), read back as the mean
        np.testing.assert_allclose(back.weights(name), e.sums[0] / 512, rtol=1e-6)


def test_damaged_files_are_one_line_errors(tmp_path):
    (tmp_path / "short.dat").write_bytes(b"\x02\x00\x00\x00\x05\x00\x00\x00ab")
    with pytest.raises(AthanorError, match="truncated"):
        read_imatrix(tmp_path / "short.dat")
    with pytest.raises(AthanorError, match="does not exist"):
        read_imatrix(tmp_path / "missing.gguf")


def test_imatrix_sums_the_squared_inputs_of_every_matmul(tiny_hf_dir, tmp_path):
    """Parity: the sums equal x^2 summed over the inputs transformers' own Linear layers see, per column."""
    import torch
    from transformers import AutoModelForCausalLM

    from athanor.text.tokenizer import Tokenizer

    (tmp_path / "cal.txt").write_text(TEXT, encoding="utf-8")
    r = _run(["imatrix", tiny_hf_dir, "--text", tmp_path / "cal.txt", "-o", tmp_path / "im.gguf", "--chunk", "32",
              "--chunks", "3"])
    assert r.exit_code == 0, r.output
    im = read_imatrix(tmp_path / "im.gguf")
    assert im.chunk_count == 3 and im.chunk_size == 32
    assert len(im.entries) == 2 * 7  # q, k, v, output, gate, up, down per layer; no LM head (llama.cpp's default)

    ids = Tokenizer.from_hf_dir(tiny_hf_dir).encode(TEXT)[: 3 * 32]
    ref = AutoModelForCausalLM.from_pretrained(tiny_hf_dir, torch_dtype=torch.float32).eval()
    sums: dict[str, torch.Tensor] = {}
    names = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
             "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}

    def hook(key):
        return lambda _m, inp, _o: sums.__setitem__(key, sums.get(key, 0) + inp[0][0].double().pow(2).sum(0))

    for mname, module in ref.model.layers.named_modules():
        leaf = mname.rpartition(".")[2]
        if leaf in names:
            module.register_forward_hook(hook(f"blk.{mname.split('.')[0]}.{names[leaf]}.weight"))
    with torch.no_grad():
        for i in range(3):
            ref(torch.tensor([ids[32 * i : 32 * (i + 1)]]))
    assert set(sums) == set(im.entries)
    for name, s in sums.items():
        assert im.entries[name].counts.tolist() == [96.0]
        np.testing.assert_allclose(im.entries[name].sums[0], s.numpy(), rtol=2e-4, atol=1e-6)


def test_quantize_with_imatrix_uses_and_records_it(tiny_hf_dir, tmp_path):
    import gguf

    (tmp_path / "cal.txt").write_text(TEXT, encoding="utf-8")
    assert _run(["imatrix", tiny_hf_dir, "--text", tmp_path / "cal.txt", "-o", tmp_path / "im.dat", "--chunk", "32",
                 "--format", "dat"]).exit_code == 0
    for name, extra in (("plain", []), ("im", ["--imatrix", tmp_path / "im.dat"])):
        assert _run(["quantize", tiny_hf_dir, "--type", "Q4_0", "-o", tmp_path / f"{name}.gguf", *extra]).exit_code == 0
    plain, weighted = (gguf.GGUFReader(tmp_path / f"{n}.gguf") for n in ("plain", "im"))
    assert weighted.get_field("quantize.imatrix.entries_count").contents() == 14
    assert weighted.get_field("quantize.imatrix.file").contents() == str(tmp_path / "im.dat")
    assert plain.get_field("quantize.imatrix.entries_count") is None
    a = {t.name: bytes(t.data) for t in plain.tensors}
    b = {t.name: bytes(t.data) for t in weighted.tensors}
    assert a["blk.0.attn_q.weight"] != b["blk.0.attn_q.weight"]  # weighted by the imatrix
    assert a["output.weight"] == b["output.weight"]  # no entry for the head: quantized as without


def test_imatrix_from_another_model_is_refused(tiny_hf_dir, tmp_path):
    im = Imatrix({"blk.0.attn_q.weight": Entry(np.ones((1, 96), np.float32), np.array([1.0]))}, chunk_count=1)
    write_gguf(im, tmp_path / "other.gguf")
    r = CliRunner().invoke(app, ["quantize", str(tiny_hf_dir), "--type", "Q4_0", "-o", str(tmp_path / "x.gguf"),
                                 "--imatrix", str(tmp_path / "other.gguf")])
    assert r.exit_code != 0 and "not this model's" in str(r.exception)
    assert not (tmp_path / "x.gguf").exists()


def test_llama_imatrix_output_matches_ours(tiny_hf_dir, tmp_path):
    """llama.cpp's own llama-imatrix on the same weights and text: our reader loads its file and the importances
    agree (llama.cpp computes in F32 with its own kernels: 1e-3 relative)."""
    from athanor.models.imatrix_collect import imatrix_of
    from athanor.runtime.llm import float_model
    from tests.models.llama_cpp_bin import run_tool

    (tmp_path / "cal.txt").write_text(TEXT * 2, encoding="utf-8")
    assert _run(["export", tiny_hf_dir, "--format", "gguf", "--gguf-type", "F32", "--out", tmp_path / "m.gguf"]
                ).exit_code == 0
    run_tool("llama-imatrix", "-m", str(tmp_path / "m.gguf"), "-f", str(tmp_path / "cal.txt"), "-o",
             str(tmp_path / "lcp.gguf"), "-c", "32", "--chunks", "4", "-t", "2", "-b", "32")
    theirs = read_imatrix(tmp_path / "lcp.gguf")
    ours = imatrix_of(*float_model(str(tmp_path / "m.gguf")), (TEXT * 2), 32, 4)
    assert theirs.chunk_count == 4 and set(theirs.entries) == set(ours.entries)
    for name, e in theirs.entries.items():
        assert e.counts.tolist() == ours.entries[name].counts.tolist() == [128.0]
        np.testing.assert_allclose(ours.weights(name), theirs.weights(name), rtol=1e-3, atol=1e-6)


def test_bad_imatrix_requests_are_one_line_errors(tiny_hf_dir, tmp_path):
    (tmp_path / "short.txt").write_text("hello world", encoding="utf-8")
    cases = [(["--text", tmp_path / "short.txt", "--chunk", "32"], "fewer than one chunk"),
             (["--text", tmp_path / "short.txt", "--chunk", "8"], "--chunk must be >= 16"),
             (["--text", tmp_path / "missing.txt"], "does not exist"),
             (["--text", tmp_path / "short.txt", "--format", "csv"], "--format must be gguf or dat"),
             (["--text", tmp_path / "short.txt", "--chunks", "0"], "--chunks must be >= 1")]
    for args, message in cases:
        r = CliRunner().invoke(app, ["imatrix", str(tiny_hf_dir), "-o", str(tmp_path / "im.gguf"),
                                     *[str(a) for a in args]])
        assert r.exit_code != 0 and message in str(r.exception), (args, r.exception)
    assert not (tmp_path / "im.gguf").exists()
