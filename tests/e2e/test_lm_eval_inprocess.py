"""lm-evaluation-harness with athanor's engine as an in-process model backend (llm/lm_eval_backend.py), against the
reference: lm-eval's own `local-completions` backend talking to a real `athanor serve` (tests/e2e/test_lm_eval.py
checks that one against lm-eval's `hf` backend). The same task on the same weights must give the same accuracy
and the same per-choice log-likelihoods; generation (generate_until) and perplexity (loglikelihood_rolling) tasks
are compared the same way. Also: `athanor eval MODEL --tasks` stores the run, and lm-eval's own command line finds
the backend as `--model athanor`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.e2e.test_lm_eval import TASK_DIR, smol_server  # noqa: F401 - the fixture, shared

pytestmark = pytest.mark.slow

GEN_TASK = """task: athanor_capitals_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: capitals.jsonl
test_split: test
output_type: generate_until
doc_to_text: "Question: {{question}}\\nAnswer: {{question.replace('What is the capital of ', 'The capital of ').replace('?', ' is')}}"
doc_to_target: "{{choices[answer]}}"
generation_kwargs:
  until: ["\\n", "."]
  max_gen_toks: 12
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    regexes_to_ignore: [" "]
metadata:
  version: 1.0
"""
PPL_TASK = """task: athanor_capitals_ppl
dataset_path: json
dataset_kwargs:
  data_files:
    test: capitals.jsonl
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{question}} The answer is {{choices[answer]}}."
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
metadata:
  version: 1.0
"""


@pytest.fixture
def task_dir(tmp_path, monkeypatch) -> Path:
    """The capitals task plus generation and perplexity variants, in a working dir (data_files is relative)."""
    for var, value in {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
                       "HF_DATASETS_CACHE": str(tmp_path / "hf" / "datasets"), "OPENAI_API_KEY": "unused"}.items():
        monkeypatch.setenv(var, value)
    work = tmp_path / "tasks"
    shutil.copytree(TASK_DIR, work)
    (work / "capitals_gen.yaml").write_text(GEN_TASK)
    (work / "capitals_ppl.yaml").write_text(PPL_TASK)
    monkeypatch.chdir(work)
    return work


def _evaluate(model, model_args, tasks: list[str], work: Path) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=tasks, log_samples=True, batch_size=1,
                                   task_manager=TaskManager(include_path=str(work)))


def _per_doc(out: dict, task: str) -> dict:
    return {s["doc_id"]: s["resps"] for s in out["samples"][task]}


def test_in_process_backend_matches_the_http_backend(smol_server, task_dir):  # noqa: F811
    from athanor.llm.lm_eval_backend import AthanorLM

    # lm-eval probes /tokenizer_info with a 5 s timeout: load the model first, as a warm server would have it
    httpx.post(f"{smol_server.url}/api/generate", json={"model": "smollm2"}, timeout=120).raise_for_status()
    tasks = ["athanor_capitals", "athanor_capitals_gen", "athanor_capitals_ppl"]
    http = _evaluate("local-completions", f"model=smollm2,base_url={smol_server.url}/v1/completions,"
                     "num_concurrent=1,max_retries=1,tokenizer_backend=auto", tasks, task_dir)
    lm = AthanorLM("smollm2")
    try:
        ours = _evaluate(lm, None, tasks, task_dir)
    finally:
        lm.close()
    print({t: (http["results"][t], ours["results"][t]) for t in tasks})

    # multiple choice: same accuracy (0.864 on this task), same log-likelihood per choice
    acc = ours["results"]["athanor_capitals"]["acc,none"]
    assert acc == http["results"]["athanor_capitals"]["acc,none"] == pytest.approx(19 / 22)
    want, got = _per_doc(http, "athanor_capitals"), _per_doc(ours, "athanor_capitals")
    assert got.keys() == want.keys() and len(got) == 22
    for doc in got:
        assert [r[0][0] for r in got[doc]] == pytest.approx([r[0][0] for r in want[doc]], abs=1e-3), doc

    # generation: greedy, batched in-process vs one request at a time over HTTP: the same text per document
    gen_want, gen_got = _per_doc(http, "athanor_capitals_gen"), _per_doc(ours, "athanor_capitals_gen")
    assert gen_got == gen_want
    assert ours["results"]["athanor_capitals_gen"]["exact_match,none"] == \
        http["results"]["athanor_capitals_gen"]["exact_match,none"] > 0.5

    # perplexity: the same summed log-likelihood per document
    ppl_want, ppl_got = _per_doc(http, "athanor_capitals_ppl"), _per_doc(ours, "athanor_capitals_ppl")
    for doc in ppl_got:
        assert ppl_got[doc][0] == pytest.approx(ppl_want[doc][0], abs=1e-2), doc
    assert ours["results"]["athanor_capitals_ppl"]["word_perplexity,none"] == pytest.approx(
        http["results"]["athanor_capitals_ppl"]["word_perplexity,none"], rel=1e-3)


def test_eval_command_runs_tasks_and_stores_them(task_dir):
    from athanor.cli import app
    from athanor.ops.evals import load_run

    r = CliRunner().invoke(app, ["eval", "smollm2", "--tasks", "athanor_capitals", "--include-path", str(task_dir)])
    assert r.exit_code == 0, r.output
    m = re.search(r"athanor_capitals: acc (\S+) .* stored as (eval-\S+),", r.stdout)
    assert m, r.stdout
    assert float(m.group(1)) == pytest.approx(19 / 22, abs=1e-4)
    run = load_run(m.group(2))
    assert run["kind"] == "lm-eval" and run["n"] == 22 and run["correct"] == 19
    assert run["model_digest"].startswith("sha256:") and run["scorer"] == "lm-eval:acc"
    assert run["items"][0]["input"] == "Question: What is the capital of France?\nAnswer:"
    assert run["items"][0]["output"] == " Paris" and run["items"][0]["correct"]


def test_lm_evals_own_command_line_finds_the_backend(task_dir):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "athanor.llm.lm_eval_backend", "run", "--model", "athanor",
                           "--model_args", "model=smollm2", "--tasks", "athanor_capitals", "--include_path",
                           str(task_dir)], capture_output=True, text=True, timeout=600, env=env, cwd=task_dir, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = next(line for line in proc.stdout.splitlines() if "athanor_capitals" in line and "acc" in line)
    value = float(re.search(r"\|acc\s*\|[^|]*\|\s*([0-9.]+)", row).group(1))
    assert value == pytest.approx(19 / 22, abs=1e-4)
