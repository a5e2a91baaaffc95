"""Runs persisted in SQLite as their events arrive: the run, every node execution, conversations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from athanor.workflow.dsl import load_app
from athanor.workflow.engine import WorkflowEngine
from athanor.workflow.errors import WorkflowError
from athanor.workflow.runs import RunStore
from tests.workflow.conftest import FIXTURES, chain, code, dify_app, end, load, start


def test_run_and_node_executions_are_stored():
    store = RunStore()
    assert store.path == Path(os.environ["ATHANOR_HOME"]) / "workflows" / "runs.sqlite"
    app = load_app(FIXTURES / "iteration_format_w1.yml")
    result = WorkflowEngine(app, None, [store.observer(app, "ann")]).run({})
    run = store.get_run(result.run_id)
    assert run["status"] == "succeeded" and run["outputs"] == result.outputs and run["inputs"] == {}
    assert run["app_name"] == "iteration_format_w1" and run["user_id"] == "ann"
    assert run["total_steps"] == result.total_steps and run["elapsed_time"] > 0
    executions = run["node_executions"]
    assert [n["node_id"] for n in executions][:2] == ["start", "numbers"]
    assert len([n for n in executions if n["node_id"] == "fmt"]) == 3
    assert all(n["iteration_id"] == "loop1" for n in executions if n["node_id"] in ("fmt", "loop1start"))
    assert executions[1]["outputs"] == {"result": [1, 2, 3]}
    assert store.get_run(result.run_id[:8])["id"] == result.run_id  # a prefix works
    assert [r["id"] for r in RunStore().list_runs()] == [result.run_id]  # a second connection sees it


def test_failed_run_keeps_error_and_failed_node():
    store = RunStore()
    app = load(dify_app([start(), code("c", "def main() -> dict:\n    return {'r': 1}\n", {"r": "string"}),
                         end(r=["c", "r"])], chain("start", "c", "end")))
    result = WorkflowEngine(app, None, [store.observer(app)]).run({})
    run = store.get_run(result.run_id)
    assert run["status"] == "failed" and "must be string" in run["error"]
    assert run["node_executions"][-1]["status"] == "failed" and run["node_executions"][-1]["node_id"] == "c"


def test_unknown_run_and_conversations():
    store = RunStore()
    with pytest.raises(WorkflowError, match="not found"):
        store.get_run("nope")
    store.save_conversation("c1", "app", {"turns": ["a"]}, 1)
    store.save_conversation("c1", "app", {"turns": ["a", "b"]}, 2)
    assert store.conversation("c1")["variables"] == {"turns": ["a", "b"]}
    assert store.conversation("c1")["dialogue_count"] == 2 and store.conversation("c2") is None
