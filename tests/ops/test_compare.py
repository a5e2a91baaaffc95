"""`athanor eval compare`: the exact McNemar test against scipy's binomial test (and hand-computed values), the
paired bootstrap interval, pairing by index and input hash, the gate's exit status, the plot, and the HTTP routes
on a real server.

The runs here are SYNTHETIC: built with the store API (EvalStore.save) from known right/wrong patterns, so the
statistics have known answers. Real runs of the built-in model are compared in tests/ops/test_evals.py."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from athanor.ops.compare import bootstrap_ci, compare_runs, format_report, mcnemar_exact, pair_items, plot
from athanor.ops.eval_store import EvalStore, input_hash, new_run_id
from athanor.ops.evals import wilson


def synthetic_run(correct: list[bool], model: str = "synthetic", questions: list[str] | None = None) -> dict:
    """A run dict as run_eval stores it, with the given verdicts (SYNTHETIC: no model ran)."""
    questions = questions or [f"question {i}" for i in range(len(correct))]
    items = [{"index": i, "input": [{"role": "user", "content": q}], "input_hash": input_hash([{"role": "user",
              "content": q}]), "ideal": "x", "output": "x" if ok else "y", "correct": ok,
              "detail": "synthetic", "trace_id": None, "held_out": False, "latency": 0.0}
             for i, (q, ok) in enumerate(zip(questions, correct))]
    n, k = len(items), sum(correct)
    lo, hi = wilson(k, n)
    return {"run_id": new_run_id(), "kind": "items", "model": model, "model_digest": None, "data": "synthetic.jsonl",
            "data_sha256": "0" * 64, "scorer": "exact", "options": {"synthetic": True}, "n": n, "correct": k,
            "accuracy": k / n, "ci_low": lo, "ci_high": hi, "held_out": False, "created": 0.0, "duration": 0.0,
            "meta": {"synthetic": True}, "items": items}


BASE = [True] * 14 + [False] * 6  # 20 items, 70% right


def flipped(base: list[bool], right_to_wrong: int, wrong_to_right: int = 0) -> list[bool]:
    out, rw, wr = list(base), right_to_wrong, wrong_to_right
    for i, ok in enumerate(base):
        if ok and rw:
            out[i], rw = False, rw - 1
        elif not ok and wr:
            out[i], wr = True, wr - 1
    return out


@pytest.mark.parametrize("b,c", [(0, 0), (6, 0), (3, 5), (8, 0), (10, 3), (1, 1), (20, 12), (0, 17)])
def test_mcnemar_exact_is_scipys_two_sided_binomial_test(b, c):
    stats = pytest.importorskip("scipy.stats")
    want = 1.0 if b + c == 0 else stats.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue
    assert mcnemar_exact(b, c) == pytest.approx(want, rel=1e-12)


def test_mcnemar_hand_computed_values():
    assert mcnemar_exact(6, 0) == 2 / 2**6  # all six discordant pairs one way
    assert mcnemar_exact(3, 5) == pytest.approx(2 * (1 + 8 + 28 + 56) / 2**8)  # 0.7265625
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(4, 4) == 1.0


def test_bootstrap_interval_is_seeded_and_brackets_the_difference():
    a = [int(x) for x in BASE]
    b = [int(x) for x in flipped(BASE, 5, 1)]
    lo, hi = bootstrap_ci(a, b)
    assert (lo, hi) == bootstrap_ci(a, b)
    assert lo < (sum(b) - sum(a)) / len(a) < hi <= 0.0 + 1e-12
    assert bootstrap_ci(a, a) == (0.0, 0.0)
    # its width is near the normal approximation's for paired differences
    d = [y - x for x, y in zip(a, b)]
    mean = sum(d) / len(d)
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / len(d) / len(d))
    assert hi - lo == pytest.approx(2 * 1.96 * sd, rel=0.25)


def test_a_run_against_itself_is_not_worse():
    run = synthetic_run(BASE)
    result = compare_runs(run, run)
    assert result["n_paired"] == 20 and result["diff"] == 0.0 and result["p_value"] == 1.0
    assert not result["worse"] and not result["better"]
    assert not any(it["changed"] for it in result["items"])


def test_flipped_items_make_b_worse_and_small_changes_stay_noise():
    a = synthetic_run(BASE)
    worse = compare_runs(a, synthetic_run(flipped(BASE, 8), "doctored"))
    assert worse["worse"] and not worse["better"]
    assert worse["diff"] == pytest.approx(-0.4) and worse["p_value"] == pytest.approx(2 / 2**8)
    assert worse["only_a_correct"] == 8 and sum(it["changed"] for it in worse["items"]) == 8
    noise = compare_runs(a, synthetic_run(flipped(BASE, 2, 1), "doctored"))
    assert not noise["worse"] and noise["diff"] < 0 and noise["p_value"] == 1.0
    better = compare_runs(synthetic_run(flipped(BASE, 8)), a)
    assert better["better"] and not better["worse"]
    report = format_report(worse)
    assert "B is WORSE than A" in report and "changed items (8)" in report


def test_only_items_in_both_runs_are_paired():
    a = synthetic_run([True, True, False, True])
    b = synthetic_run([True, False, False], questions=["question 0", "a different question", "question 2"])
    pairs = pair_items(a, b)
    assert [(x["index"], y["index"]) for x, y in pairs] == [(0, 0), (2, 2)]
    assert compare_runs(a, b)["n_paired"] == 2


def test_gate_exit_status_and_plot(tmp_path):
    from athanor.cli import app

    a, b = synthetic_run(BASE), synthetic_run(flipped(BASE, 8), "doctored")
    with EvalStore() as store:
        for r in (a, b):
            store.save(r)
    run = CliRunner().invoke
    r = run(app, ["eval", "compare", a["run_id"], b["run_id"], "--gate", "--plot", str(tmp_path / "cmp.png")])
    assert r.exit_code == 1, r.output
    assert "B is WORSE than A" in r.stdout and (tmp_path / "cmp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = run(app, ["eval", "compare", a["run_id"], a["run_id"], "--gate"])
    assert r.exit_code == 0 and "no difference beyond noise" in r.stdout
    r = run(app, ["eval", "compare", b["run_id"], a["run_id"], "--gate", "--json"])
    assert r.exit_code == 0 and '"better": true' in r.stdout
    r = run(app, ["eval", "runs", "--json"])
    assert r.exit_code == 0 and a["run_id"] in r.stdout and b["run_id"] in r.stdout
    r = run(app, ["eval", "compare", a["run_id"], "eval-missing"])
    assert r.exit_code != 0 and "no eval run 'eval-missing'" in str(r.exception)


def test_plot_writes_a_png_without_a_display(tmp_path):
    pytest.importorskip("matplotlib")
    result = compare_runs(synthetic_run(BASE), synthetic_run(flipped(BASE, 3)))
    out = plot(result, str(tmp_path / "bars.png"))
    assert Path(out).read_bytes()[:4] == b"\x89PNG"


def test_http_routes_list_show_compare_and_404(tmp_path):
    from athanor.models.store import Store
    from athanor.serve.app import create_app
    from tests.e2e.conftest import start_server

    a, b = synthetic_run(BASE), synthetic_run(flipped(BASE, 8), "doctored")
    with EvalStore() as store:
        store.save(a)
        store.save(b)
    with start_server(create_app(store=Store(tmp_path / "home"))) as s:
        listed = httpx.get(f"{s.url}/v1/evals", timeout=10).json()
        assert listed["object"] == "list" and {r["run_id"] for r in listed["data"]} == {a["run_id"], b["run_id"]}
        assert "items" not in listed["data"][0]
        one = httpx.get(f"{s.url}/v1/evals/{a['run_id']}", timeout=10).json()
        assert one["n"] == 20 and len(one["items"]) == 20 and one["items"][0]["input_hash"] == a["items"][0]["input_hash"]
        cmp = httpx.get(f"{s.url}/v1/evals/compare", params={"a": a["run_id"], "b": b["run_id"]}, timeout=10).json()
        assert cmp["worse"] is True and cmp["n_paired"] == 20 and cmp["diff"] == pytest.approx(-0.4)
        for url, param in [("/v1/evals/eval-nope", "run_id"), (f"/v1/evals/compare?a={a['run_id']}&b=eval-nope", "b")]:
            r = httpx.get(s.url + url, timeout=10)
            assert r.status_code == 404, r.text
            err = r.json()["error"]
            assert "eval-nope" in err["message"] and err["param"] == param and err["type"] == "not_found_error"
        r = httpx.get(f"{s.url}/v1/evals/compare", params={"a": a["run_id"]}, timeout=10)
        assert 400 <= r.status_code < 500 and "error" in r.json()
        r = httpx.get(f"{s.url}/v1/evals", params={"offset": 11383912453836933955584}, timeout=10)  # the fuzz's find
        assert 400 <= r.status_code < 500 and "error" in r.json()  # not SQLite's OverflowError as a 500
