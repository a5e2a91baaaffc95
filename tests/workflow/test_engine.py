"""Engine semantics: edges taken/skipped, joins, concurrency, error strategies, limits, variables, events."""

from __future__ import annotations

import threading

import pytest

from athanor.workflow.errors import WorkflowError
from athanor.workflow.services import Services
from tests.workflow.conftest import chain, code, dify_app, edge, end, node, run_doc, start
from tests.workflow.w1_nodes import BarrierNode, FlakyNode  # noqa: F401  (registers the test node types)


def _tmpl(node_id: str, template: str, **variables) -> dict:
    return node(node_id, "template-transform", template=template,
                variables=[{"variable": k, "value_selector": v} for k, v in variables.items()])


def test_parallel_branches_fixture(fixtures_dir):
    from athanor.workflow.dsl import load_app
    from athanor.workflow.engine import run_workflow

    app = load_app(fixtures_dir / "parallel_branches_w1.yml")
    on = run_workflow(app, {"switch": "1"})
    off = run_workflow(app, {"switch": 0})
    assert on.status == off.status == "succeeded"
    assert on.outputs == {"1": "Code 1", "2": "Code 2", "3": None}
    assert off.outputs == {"1": None, "2": "Code 2", "3": "Code 3"}


def test_skips_propagate_and_join_waits_for_live_branches():
    # start -> gate --true--> a -> b -> join ; gate --false--> c -> join ; join -> end
    nodes = [start("x"), node("gate", "if-else", cases=[{"case_id": "true", "logical_operator": "and", "conditions": [
        {"variable_selector": ["start", "x"], "comparison_operator": "is", "value": "go"}]}]),
        _tmpl("a", "A"), _tmpl("b", "B{{ v }}", v=["a", "output"]), _tmpl("c", "C"),
        _tmpl("join", "{{ b or '' }}|{{ c or '' }}", b=["b", "output"], c=["c", "output"]), end(out=["join", "output"])]
    edges = [edge("start", "gate"), edge("gate", "a", "true"), edge("gate", "c", "false"), *chain("a", "b", "join"),
             edge("c", "join"), edge("join", "end")]
    result, rec = run_doc(dify_app(nodes, edges), {"x": "go"})
    assert result.outputs == {"out": "BA|"}
    status = rec.node_status()
    assert "c" not in status and status["join"] == "succeeded"
    assert len([e for e in rec.of("node_started") if e["data"]["node_id"] == "join"]) == 1
    result, rec = run_doc(dify_app(nodes, edges), {"x": "stop"})
    assert result.outputs == {"out": "|C"}
    assert "a" not in rec.node_status() and "b" not in rec.node_status()


def test_all_incoming_skipped_means_skipped_downstream():
    nodes = [start("x"), node("gate", "if-else", cases=[{"case_id": "yes", "conditions": [
        {"variable_selector": ["start", "x"], "comparison_operator": "not empty"}]}]),
        _tmpl("a", "A"), _tmpl("after", "after"), _tmpl("other", "other"),
        end(a=["a", "output"], after=["after", "output"], other=["other", "output"])]
    edges = [edge("start", "gate"), edge("gate", "a", "yes"), edge("a", "after"), edge("gate", "other", "false"),
             edge("after", "end"), edge("other", "end")]
    result, rec = run_doc(dify_app(nodes, edges), {"x": ""})
    assert result.outputs == {"a": None, "after": None, "other": "other"}
    assert set(rec.node_status()) == {"start", "gate", "other", "end"}


def test_parallel_branches_run_concurrently():
    BarrierNode.barriers["p2"] = threading.Barrier(2)
    nodes = [start(), node("b1", "test-barrier", barrier="p2"), node("b2", "test-barrier", barrier="p2"),
             end(one=["b1", "ok"], two=["b2", "ok"])]
    edges = [edge("start", "b1"), edge("start", "b2"), edge("b1", "end"), edge("b2", "end")]
    result, _ = run_doc(dify_app(nodes, edges))
    assert result.status == "succeeded", result.error
    assert result.outputs == {"one": True, "two": True}


def test_retry_then_success_emits_node_retry():
    nodes = [start(), node("f", "test-flaky", key="retry-ok", failures=2,
                           retry_config={"retry_enabled": True, "max_retries": 2, "retry_interval": 1}),
             end(v=["f", "value"], n=["f", "attempts"])]
    result, rec = run_doc(dify_app(nodes, chain("start", "f", "end")))
    assert result.status == "succeeded"
    assert result.outputs == {"v": "recovered", "n": 3}
    assert [e["data"]["retry_index"] for e in rec.of("node_retry")] == [1, 2]


def test_retries_exhausted_fail_the_run_with_node_id():
    nodes = [start(), node("f", "test-flaky", key="retry-fail", failures=5,
                           retry_config={"retry_enabled": True, "max_retries": 1, "retry_interval": 0}),
             end(v=["f", "value"])]
    result, rec = run_doc(dify_app(nodes, chain("start", "f", "end")))
    assert result.status == "failed"
    assert "node f" in result.error and "flaky failure 2" in result.error
    assert rec.node_status()["f"] == "failed" and "end" not in rec.node_status()
    assert rec.of("workflow_finished")[0]["data"]["status"] == "failed"


def test_fail_branch_strategy():
    failing = code("c", "def main() -> dict:\n    raise ValueError('boom')\n", {"r": "string"},
                   error_strategy="fail-branch")
    nodes = [start(), failing, _tmpl("ok", "fine {{ r }}", r=["c", "r"]),
             _tmpl("handler", "handled: {{ m }}", m=["c", "error_message"]),
             node("agg", "variable-aggregator", variables=[["ok", "output"], ["handler", "output"]]),
             end(out=["agg", "output"])]
    edges = [edge("start", "c"), edge("c", "ok", "success-branch"), edge("c", "handler", "fail-branch"),
             edge("ok", "agg"), edge("handler", "agg"), edge("agg", "end")]
    result, rec = run_doc(dify_app(nodes, edges))
    assert result.status == "partial-succeeded" and result.exceptions_count == 1
    assert result.outputs["out"].startswith("handled: code failed: ValueError: boom")
    assert rec.node_status()["c"] == "exception" and "ok" not in rec.node_status()
    # the same node succeeding takes the success branch
    nodes[1] = code("c", "def main() -> dict:\n    return {'r': 'yes'}\n", {"r": "string"}, error_strategy="fail-branch")
    result, _ = run_doc(dify_app(nodes, edges))
    assert result.status == "succeeded" and result.outputs == {"out": "fine yes"}


def test_default_value_strategy():
    failing = code("c", "def main() -> dict:\n    return {'n': 'not a number'}\n", {"n": "number"},
                   error_strategy="default-value", default_value=[{"key": "n", "type": "number", "value": "42"},
                                                                  {"key": "o", "type": "object", "value": '{"a": 1}'}])
    nodes = [start(), failing, end(n=["c", "n"], o=["c", "o"], err=["c", "error_message"])]
    result, rec = run_doc(dify_app(nodes, chain("start", "c", "end")))
    assert result.status == "partial-succeeded"
    assert result.outputs["n"] == 42 and result.outputs["o"] == {"a": 1} and "must be number" in result.outputs["err"]
    assert rec.node_status()["c"] == "exception"


def test_step_limit():
    nodes = [start(), *[_tmpl(f"t{i}", str(i)) for i in range(5)], end(last=["t4", "output"])]
    result, _ = run_doc(dify_app(nodes, chain("start", *[f"t{i}" for i in range(5)], "end")),
                        services=Services(max_steps=3))
    assert result.status == "failed" and "exceeded 3 steps" in result.error


def test_time_limit():
    from tests.workflow.w1_nodes import BLOCK_FINISHED, BLOCK_RELEASE

    BLOCK_RELEASE.clear()
    BLOCK_FINISHED.clear()
    nodes = [start(), node("s", "test-block"), end(v=["s", "released"])]
    try:
        result, _ = run_doc(dify_app(nodes, chain("start", "s", "end")), services=Services(max_seconds=0.3))
        assert result.status == "failed" and "time limit" in result.error
        assert BLOCK_FINISHED == []  # the run returned while its node was still blocked
    finally:
        BLOCK_RELEASE.set()


def test_system_env_and_conversation_variables():
    env = [{"name": "API_BASE", "value": "http://x", "value_type": "string"},
           {"name": "N", "value": "3", "value_type": "number"}]
    conv = [{"name": "history", "value": [], "value_type": "array[string]"},
            {"name": "last", "value": "", "value_type": "string"}]
    nodes = [start(), node("w", "assigner", version="2", items=[
        {"variable_selector": ["conversation", "history"], "input_type": "variable", "operation": "append",
         "value": ["sys", "query"]},
        {"variable_selector": ["conversation", "last"], "input_type": "variable", "operation": "over-write",
         "value": ["sys", "user_id"]}]),
        node("ans", "answer", answer="{{#sys.query#}} {{#env.API_BASE#}} {{#env.N#}} {{#conversation.history#}} "
                                     "{{#conversation.last#}} {{#sys.dialogue_count#}}")]
    doc = dify_app(nodes, chain("start", "w", "ans"), mode="advanced-chat", env=env, conversation=conv)
    result, rec = run_doc(doc, query="hi", user="ann", conversation={"history": ["before"]}, dialogue_count=2)
    assert result.answer == 'hi http://x 3 ["before", "hi"] ann 2'
    assert result.conversation == {"history": ["before", "hi"], "last": "ann"}
    assert rec.text() == result.answer
    assert rec.names()[-2:] == ["message_end", "workflow_finished"]
    run_ids = {e["workflow_run_id"] for e in rec.events}
    assert run_ids == {result.run_id} and result.outputs["answer"] == result.answer


def test_advanced_chat_requires_query_and_inputs_are_checked():
    doc = dify_app([start(), node("a", "answer", answer="x")], chain("start", "a"), mode="advanced-chat")
    with pytest.raises(WorkflowError, match="query"):
        run_doc(doc)
    doc = dify_app([start("n", required=True, types={"n": "number"}), end(n=["start", "n"])], chain("start", "end"))
    with pytest.raises(WorkflowError, match="'n' is required"):
        run_doc(doc, {})
    with pytest.raises(WorkflowError, match="must be a number"):
        run_doc(doc, {"n": "seven"})
    assert run_doc(doc, {"n": "7.5"})[0].outputs == {"n": 7.5}


def test_event_shapes():
    nodes = [start("x"), _tmpl("t", "{{ x }}!", x=["start", "x"]), end(out=["t", "output"])]
    result, rec = run_doc(dify_app(nodes, chain("start", "t", "end")), {"x": "hey"})
    names = [n for n in rec.names() if n != "text_chunk"]
    assert names == ["workflow_started"] + ["node_started", "node_finished"] * 3 + ["workflow_finished"]
    assert rec.text() == "hey!"  # the end node streams its output
    started = rec.events[0]
    assert set(started) >= {"event", "task_id", "workflow_run_id", "data"}
    assert set(started["data"]) >= {"id", "workflow_id", "inputs", "created_at"}
    assert started["workflow_run_id"] == started["data"]["id"] == result.run_id
    finished_t = rec.of("node_finished")[1]["data"]
    assert finished_t["node_id"] == "t" and finished_t["node_type"] == "template-transform"
    assert finished_t["outputs"] == {"output": "hey!"} and finished_t["status"] == "succeeded"
    assert finished_t["predecessor_node_id"] == "start" and finished_t["index"] == 2
    assert set(finished_t) >= {"id", "title", "inputs", "process_data", "error", "elapsed_time",
                               "execution_metadata", "created_at", "finished_at"}
    done = rec.events[-1]["data"]
    assert done["status"] == "succeeded" and done["outputs"] == {"out": "hey!"} and done["total_steps"] == 3


def test_graphs_that_cannot_run_fail_before_running():
    doc = dify_app([start(), node("x", "no-such-node"), end()], chain("start", "x", "end"))
    with pytest.raises(WorkflowError, match="unknown node type 'no-such-node'"):
        run_doc(doc)
    doc = dify_app([start(), _tmpl("a", ""), _tmpl("b", ""), end()], [*chain("start", "a", "b", "end"), edge("b", "a")])
    with pytest.raises(WorkflowError, match="part of a cycle"):
        run_doc(doc)
