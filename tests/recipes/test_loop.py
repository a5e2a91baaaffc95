"""The loop recipe end to end on the built-in model (--quick: 6 questions, 4 LoRA steps): every stage runs and
leaves its record: traces with automatic feedback, an exported dataset naming those traces, an adapter whose
lineage names the dataset and traces, a gate decision with held-out eval runs, and the alias consistent with it.
It asserts that the loop works, not that 4 steps teach the model (benchmarks/RESULTS.md has the full run)."""

from __future__ import annotations

import json

import pytest

from athanor.models.store import Store
from athanor.ops.trace_store import TraceStore
from recipes.loop.run import QUICK, LoopConfig, run_loop, summary


@pytest.mark.slow
def test_quick_loop_runs_every_stage_and_records_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ATHANOR_HOME", str(tmp_path / "home"))  # run_loop points the process at cfg.home
    cfg = LoopConfig(work=tmp_path / "loop", home=tmp_path / "home", **QUICK)
    report = run_loop(cfg)
    assert list(report["seconds"]) == ["traffic", "feedback", "export", "train", "eval+promote"]

    ids = report["traffic"]["trace_ids"]
    store = TraceStore(tmp_path / "home" / "traces.sqlite")
    try:
        traces = [store.get(t) for t in ids]
        assert all(t is not None and t["feedback"][-1]["source"] == "loop:calculator" for t in traces)
        assert sum(t["feedback"][-1]["score"] > 0 for t in traces) == report["traffic"]["right"]
        assert all(any(s["kind"] == "agent" for s in t["spans"]) for t in traces)
        gate_items = store.list(feedback="any", limit=1000)
        held = [r for r in gate_items if r["trace_id"] not in ids]
        assert held and all(r["held_out"] for r in held)  # the gate's eval traces never become training data
    finally:
        store.close()

    info = json.loads((cfg.work / "data" / "dataset_info.json").read_text())["loop_sft"]
    assert report["dataset"]["records"] >= 1 and set(info["_trace_ids"]) <= set(ids)
    wrong = len(ids) - report["traffic"]["right"]
    assert report["dataset"]["records"] >= min(wrong, 1)

    lineage = Store().get("loop-tuned").lineage
    trained = lineage["adapters"][0]["lineage"]
    assert trained["kind"] == "train" and trained["datasets"][0]["trace_ids"] == info["_trace_ids"]
    assert lineage["from"]["name"] == "smollm2:latest"

    gate = report["promotion"]
    assert gate["status"] in ("promoted", "refused") and gate["eval"]["n"] == QUICK["num_eval"]
    expected = "loop-tuned:latest" if gate["status"] == "promoted" else "smollm2:latest"
    assert report["serving"] == expected
    assert "held-out tool-call accuracy" in summary(report)
