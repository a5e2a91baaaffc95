"""CLI runs record traces in $ATHANOR_HOME/traces.sqlite (`athanor agent`, `workflow run`, `kb ask`), print
nothing extra unless --verbose, and record nothing with ATHANOR_TRACE=0."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from athanor.cli import app
from athanor.ops.trace_store import TraceStore
from tests.llm.openai_stub import serve_stub

PASSTHROUGH = Path(__file__).parents[1] / "workflow" / "fixtures" / "w1" / "passthrough_w1.yml"
runner = CliRunner()


def home() -> Path:
    return Path(os.environ["ATHANOR_HOME"])


def stored() -> list[dict]:
    store = TraceStore(home() / "traces.sqlite")
    try:
        return [store.get(r["trace_id"]) for r in store.list()]
    finally:
        store.close()


def test_workflow_run_records_its_trace_and_prints_nothing_more():
    r = runner.invoke(app, ["workflow", "run", str(PASSTHROUGH), "-i", "query=hello"])
    assert r.exit_code == 0, r.output
    assert "trace" not in r.output
    [trace] = stored()
    assert trace["kind"] == "workflow" and trace["name"] == "workflow passthrough_w1"
    assert sorted(s["kind"] for s in trace["spans"]) == ["node", "node", "workflow"]


def test_athanor_trace_0_records_nothing(monkeypatch):
    monkeypatch.setenv("ATHANOR_TRACE", "0")
    r = runner.invoke(app, ["workflow", "run", str(PASSTHROUGH), "-i", "query=hello"])
    assert r.exit_code == 0, r.output
    assert not (home() / "traces.sqlite").exists()


def test_help_of_a_traced_command_opens_no_trace_store():
    r = runner.invoke(app, ["kb", "ask", "--help"])
    assert r.exit_code == 0 and not (home() / "traces.sqlite").exists()


def test_agent_command_records_its_run_and_prints_the_trace_id_when_verbose():
    with serve_stub(lambda messages, body: "391") as (url, _):
        r = runner.invoke(app, ["agent", "17*23?", "--native", "--model", f"openai:{url}#stub-model", "--verbose"])
    assert r.exit_code == 0, r.output
    [trace] = stored()
    assert trace["kind"] == "agent" and trace["model"] == "stub-model"
    assert f"trace {trace['trace_id']}" in r.output
    kinds = sorted(s["kind"] for s in trace["spans"])
    assert kinds == ["agent", "chain", "chain", "llm", "llm", "tool", "tool"]


@pytest.mark.slow
def test_kb_ask_records_a_chain_with_its_retrieval():
    from athanor.rag.kb import KnowledgeBase

    kb = KnowledgeBase.create("notes")
    kb.add_texts([("a.md", "The office opens at nine in the morning.")])
    kb.close()
    r = runner.invoke(app, ["kb", "ask", "notes", "What is the airspeed of a swallow?", "--model", "smollm2"])
    assert r.exit_code == 0, r.output
    [trace] = stored()
    assert trace["kind"] == "chain" and trace["name"] == "kb ask"
    kinds = [s["kind"] for s in trace["spans"]]
    assert kinds.count("retrieval") == 1 and "llm" not in kinds  # nothing close enough: the model is not asked
    [chain] = [s for s in trace["spans"] if s["kind"] == "chain"]
    assert chain["attributes"]["athanor.rag.finish_reason"] == "no_context"
