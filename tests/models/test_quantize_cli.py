"""`athanor quantize` and `athanor perplexity` from the command line: the files they write, the numbers they print,
and the KL-divergence gate.

Parity: our perplexity equals transformers' on the same weights and windows; Q8_0 is closer to the source than
Q4_0 (more bits, less divergence); the quantized file is a GGUF whose matrices carry the asked type.
"""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from athanor.cli import app

TEXT = ("The capital of France is Paris. hello world, how are you? 数字 12345 and emoji 🙂 too. " * 12)


@pytest.fixture()
def text_file(tmp_path):
    p = tmp_path / "eval.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


def _run(args: list[str]):
    return CliRunner().invoke(app, args, catch_exceptions=False)


def _quantize_json(src, kind: str, out, text_file, *extra: str) -> tuple[int, dict]:
    r = _run(["quantize", str(src), "--type", kind, "-o", str(out), "--eval-text", str(text_file), "--ctx", "64",
              "--json", *extra])
    return r.exit_code, json.loads(r.stdout.strip().splitlines()[-1])


def test_quantize_writes_the_asked_type_and_measures_it(tiny_hf_dir, tmp_path, text_file):
    import gguf

    code8, q8 = _quantize_json(tiny_hf_dir, "Q8_0", tmp_path / "q8.gguf", text_file)
    code4, q4 = _quantize_json(tiny_hf_dir, "Q4_0", tmp_path / "q4.gguf", text_file)
    assert code8 == code4 == 0
    assert q8["tokens"] == q4["tokens"] > 100
    assert q8["ppl_source"] == pytest.approx(q4["ppl_source"])  # the same source, the same windows
    assert 0 <= q8["kld"] < q4["kld"] < 0.05, (q8, q4)  # more bits, less divergence
    assert q4["bytes"] < q8["bytes"]
    assert q8["gate"] is None
    reader = gguf.GGUFReader(tmp_path / "q4.gguf")
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert kinds["blk.0.attn_q.weight"] == "Q4_0"
    assert kinds["blk.0.attn_norm.weight"] == "F32"  # norms stay float, as llama.cpp writes them


def test_kld_gate_fails_the_command_above_its_limit(tiny_hf_dir, tmp_path, text_file):
    code, report = _quantize_json(tiny_hf_dir, "Q4_0", tmp_path / "q4.gguf", text_file, "--max-kld", "1e-9")
    assert code == 1 and report["gate"] == "failed" and report["kld"] > 1e-9
    code, report = _quantize_json(tiny_hf_dir, "Q8_0", tmp_path / "q8.gguf", text_file, "--max-kld", "0.01")
    assert code == 0 and report["gate"] == "passed"


def test_gate_without_eval_text_and_bad_type_are_one_line_errors(tiny_hf_dir, tmp_path):
    r = CliRunner().invoke(app, ["quantize", str(tiny_hf_dir), "--type", "Q8_0", "-o", str(tmp_path / "x.gguf"),
                                 "--max-kld", "0.1"])
    assert r.exit_code != 0 and "--max-kld needs --eval-text" in str(r.exception or r.output)
    r = CliRunner().invoke(app, ["quantize", str(tiny_hf_dir), "--type", "Q3_XS", "-o", str(tmp_path / "x.gguf")])
    assert r.exit_code != 0 and "not supported" in str(r.exception or r.output)
    assert not (tmp_path / "x.gguf").exists()


def test_perplexity_equals_transformers_on_the_same_weights(tiny_hf_dir, text_file):
    import torch
    from transformers import AutoModelForCausalLM

    from athanor.quantize_cli import _model, _windows

    r = _run(["perplexity", str(tiny_hf_dir), str(text_file), "--ctx", "64", "--json"])
    assert r.exit_code == 0
    ours = json.loads(r.stdout)["perplexity"]

    _, tokenizer = _model(str(tiny_hf_dir))
    ref = AutoModelForCausalLM.from_pretrained(tiny_hf_dir, torch_dtype=torch.float32).eval()
    nll, count = 0.0, 0
    with torch.no_grad():
        for w in _windows(tokenizer, TEXT, 64):
            logits = ref(torch.tensor([w])).logits[0, :-1].float()
            lp = torch.log_softmax(logits, dim=-1)
            nll -= lp.gather(1, torch.tensor(w[1:]).unsqueeze(1)).sum().item()
            count += len(w) - 1
    assert ours == pytest.approx(math.exp(nll / count), rel=1e-4)


def test_quantized_file_serves_like_its_source(tiny_hf_dir, tmp_path):
    """The Q8_0 file runs under `athanor run`'s path and picks the same greedy tokens as the float source."""
    from athanor.runtime.llm import LLM

    out = tmp_path / "q8.gguf"
    assert _run(["quantize", str(tiny_hf_dir), "--type", "Q8_0", "-o", str(out)]).exit_code == 0
    prompt = [{"role": "user", "content": "The capital of France is"}]
    answers = []
    for name in (str(tiny_hf_dir), str(out)):
        llm = LLM.load(name)
        params = llm.sampling_params({"temperature": 0, "max_tokens": 8})
        answers.append(llm.generate_ids([llm.chat_prompt(prompt)], params)[0].token_ids)
    assert answers[0] == answers[1]
