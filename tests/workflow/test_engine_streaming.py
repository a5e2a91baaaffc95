"""LLM text streaming through answer nodes (and end nodes in workflow apps), including after branches.

A fake streaming node type stands in for the llm node: it calls ctx.stream for each chunk, exactly as the
real llm node does, and can wait between chunks so tests control when chunks arrive.
"""

from __future__ import annotations

import time
from typing import ClassVar

import pytest

from athanor.workflow.nodes.base import Node, NodeResult, register
from tests.workflow.conftest import Recorder, chain, dify_app, edge, end, load, node, start


@register
class _StreamingNode(Node):
    """Streams data.chunks (pausing data.pause seconds after the first); records what reached the client."""

    type = "test-stream"
    seen: ClassVar[dict] = {}
    recorders: ClassVar[dict] = {}

    def run(self, ctx):
        rec = self.recorders.get(self.data.get("recorder"))
        for i, chunk in enumerate(self.data["chunks"]):
            ctx.stream([self.id, "text"], chunk)
            if i == 0 and self.data.get("pause"):
                time.sleep(self.data["pause"])
        if rec is not None:  # what the client had received before this node finished
            self.seen[self.data["recorder"]] = rec.text()
        return NodeResult(outputs={"text": "".join(self.data["chunks"])})


def _run(doc, key: str, **kwargs):
    from athanor.workflow.engine import WorkflowEngine

    rec = Recorder()
    _StreamingNode.recorders[key] = rec
    result = WorkflowEngine(load(doc), None, [rec]).run(kwargs.pop("inputs", {}), **kwargs)
    return result, rec


def _gate(var: str, value: str) -> dict:
    return node("gate", "if-else", cases=[{"case_id": "yes", "logical_operator": "and", "conditions": [
        {"variable_selector": ["start", var], "comparison_operator": "is", "value": value}]}])


def test_chunks_stream_through_answer_after_if_else():
    nodes = [start("route"), _gate("route", "llm"),
             node("llm", "test-stream", chunks=["Hel", "lo ", "world"], recorder="branch"),
             node("ans", "answer", answer="Answer: {{#llm.text#}}"), node("other", "answer", answer="no model")]
    edges = [edge("start", "gate"), edge("gate", "llm", "yes"), edge("llm", "ans"), edge("gate", "other", "false")]
    doc = dify_app(nodes, edges, mode="advanced-chat")
    result, rec = _run(doc, "branch", inputs={"route": "llm"}, query="q")
    # everything the answer could show had reached the client before the llm node finished
    assert _StreamingNode.seen["branch"] == "Answer: Hello world"
    assert [e["answer"] for e in rec.of("message")] == ["Answer: ", "Hel", "lo ", "world"]
    assert result.answer == result.outputs["answer"] == "Answer: Hello world"
    result, rec = _run(doc, "branch", inputs={"route": "other"}, query="q")
    assert result.answer == "no model" and rec.text() == "no model"


def test_answers_stream_in_graph_order():
    nodes = [start(), node("hello", "answer", answer="Hi {{#sys.query#}}. "),
             node("llm", "test-stream", chunks=["a", "b", "c"], recorder="order"),
             node("bye", "answer", answer="{{#llm.text#}} bye")]
    doc = dify_app(nodes, chain("start", "hello", "llm", "bye"), mode="advanced-chat")
    result, rec = _run(doc, "order", query="you")
    assert _StreamingNode.seen["order"] == "Hi you. abc"
    assert result.answer == "Hi you. abc bye"
    keys = [(e["event"], e.get("answer") or (e.get("data") or {}).get("node_id")) for e in rec.events]
    first_message = [k[0] for k in keys].index("message")
    assert first_message < keys.index(("node_started", "llm"))  # the greeting went out before the model ran
    assert rec.names()[-2:] == ["message_end", "workflow_finished"]


def test_chunks_are_held_until_a_later_branch_decides():
    # the model runs before the if-else that decides whether its answer is shown at all
    nodes = [start("route"), node("llm", "test-stream", chunks=["first ", "second"], recorder="hold"),
             _gate("route", "show"), node("ans", "answer", answer="{{#llm.text#}}"),
             node("other", "answer", answer="hidden")]
    edges = [*chain("start", "llm", "gate"), edge("gate", "ans", "yes"), edge("gate", "other", "false")]
    doc = dify_app(nodes, edges, mode="advanced-chat")
    result, rec = _run(doc, "hold", inputs={"route": "show"}, query="q")
    assert _StreamingNode.seen["hold"] == ""  # nothing leaked while the branch was undecided
    assert result.answer == "first second"
    keys = [(e["event"], e.get("answer") or (e.get("data") or {}).get("node_id")) for e in rec.events]
    assert keys.index(("node_finished", "gate")) < keys.index(("message", "first second"))
    result, rec = _run(doc, "hold", inputs={"route": "no"}, query="q")
    assert result.answer == "hidden" and rec.text() == "hidden"


def test_a_join_answer_streams_while_its_other_branch_is_undecided():
    # ans is reached from llm (always) and from a slow gate: it will run either way, so chunks flow live
    nodes = [start("route"), node("slow", "test-sleep-w1", seconds=0.5), _gate("route", "x"),
             node("llm", "test-stream", chunks=["live ", "text"], recorder="join"),
             node("ans", "answer", answer="{{#llm.text#}}")]
    edges = [edge("start", "slow"), edge("slow", "gate"), edge("start", "llm"), edge("gate", "ans", "yes"),
             edge("llm", "ans")]
    doc = dify_app(nodes, edges, mode="advanced-chat")
    result, _ = _run(doc, "join", inputs={"route": "y"}, query="q")
    assert _StreamingNode.seen["join"] == "live text"
    assert result.answer == "live text"


def test_workflow_mode_streams_text_chunks_to_end():
    nodes = [start(), node("llm", "test-stream", chunks=["x", "y"], recorder="wf"), end(text=["llm", "text"])]
    result, rec = _run(dify_app(nodes, chain("start", "llm", "end")), "wf")
    chunks = rec.of("text_chunk")
    assert [c["data"]["text"] for c in chunks] == ["x", "y"]
    assert chunks[0]["data"]["from_variable_selector"] == ["llm", "text"]
    assert _StreamingNode.seen["wf"] == "xy" and result.outputs == {"text": "xy"}


@register
class _Sleep(Node):
    type = "test-sleep-w1"

    def run(self, ctx):
        time.sleep(self.data["seconds"])
        return NodeResult()


def test_real_llm_node_streams_through_answer_after_branch():
    """W2's llm node with a scripted model behind Services: its deltas reach the client while it runs."""
    from athanor.workflow.engine import WorkflowEngine
    from athanor.workflow.services import Services
    from tests.agent.scripted import ScriptedChatModel

    services = Services(default_model="scripted-w1")
    services.register_model("scripted-w1", ScriptedChatModel(["The quick brown fox jumps over the lazy dog."]))
    llm = node("llm", "llm", model={"provider": "openai", "name": "gpt-4o", "mode": "chat", "completion_params": {}},
               prompt_template=[{"role": "user", "text": "{{#sys.query#}}"}], context={"enabled": False},
               vision={"enabled": False})
    nodes = [start("route"), _gate("route", "llm"), llm, node("ans", "answer", answer="> {{#llm.text#}}"),
             node("other", "answer", answer="none")]
    edges = [edge("start", "gate"), edge("gate", "llm", "yes"), edge("llm", "ans"), edge("gate", "other", "false")]
    rec = Recorder()
    result = WorkflowEngine(load(dify_app(nodes, edges, mode="advanced-chat")), services, [rec]).run(
        {"route": "llm"}, query="tell me")
    assert result.status == "succeeded", result.error
    assert result.answer == "> The quick brown fox jumps over the lazy dog."
    keys = [(e["event"], (e.get("data") or {}).get("node_id")) for e in rec.events]
    llm_done = keys.index(("node_finished", "llm"))
    assert len([k for k in keys[:llm_done] if k[0] == "message"]) >= 3  # prefix + several deltas, before the end


def test_answer_shows_a_conversation_variable_written_upstream():
    nodes = [start(), node("w", "assigner", version="2", items=[
        {"variable_selector": ["conversation", "str"], "input_type": "variable", "operation": "over-write",
         "value": ["sys", "query"]}]), node("ans", "answer", answer="{{#conversation.str#}}")]
    doc = dify_app(nodes, chain("start", "w", "ans"), mode="advanced-chat",
                   conversation=[{"name": "str", "value": "default", "value_type": "string"}])
    result, rec = _run(doc, "conv", query="new value")
    assert result.answer == "new value" and rec.text() == "new value"


def test_answer_inside_a_loop_speaks_every_round():
    lp = node("lp", "loop", loop_count=3, break_conditions=[], loop_variables=[], start_node_id="s")
    nodes = [start(), lp, node("s", "loop-start", parent="lp"),
             node("say", "answer", parent="lp", answer="tick "), node("done", "answer", answer="done")]
    doc = dify_app(nodes, [*chain("start", "lp", "done"), edge("s", "say")], mode="advanced-chat")
    result, rec = _run(doc, "loop", query="q")
    assert result.answer == rec.text() == "tick tick tick done"


@pytest.mark.parametrize("blocking", [1, 2])
def test_end_node_streams_its_outputs_like_dify(blocking):
    """Dify's streaming-vs-template behaviour: blocking=1 goes llm -> template -> end (the template's text in
    one chunk), else llm -> end (the llm's chunks live); both ends stream `query`, "\\n", then the text."""
    gate = node("gate", "if-else", cases=[{"case_id": "true", "logical_operator": "and", "conditions": [
        {"variable_selector": ["start", "blocking"], "comparison_operator": "=", "value": "1"}]}])
    llm1 = node("llm1", "test-stream", chunks=["Hel", "lo"], recorder="end1")
    llm2 = node("llm2", "test-stream", chunks=["Hel", "lo"], recorder="end2")
    tmpl = node("tmpl", "template-transform", template="{{ a }}", variables=[
        {"variable": "a", "value_selector": ["llm1", "text"]}])
    end1 = node("end1", "end", outputs=[{"variable": "query", "value_selector": ["start", "query"]},
                                        {"variable": "text", "value_selector": ["tmpl", "output"]}])
    end2 = node("end2", "end", outputs=[{"variable": "query", "value_selector": ["start", "query"]},
                                        {"variable": "text", "value_selector": ["llm2", "text"]}])
    nodes = [start("query", "blocking", types={"blocking": "number"}), gate, llm1, tmpl, end1, llm2, end2]
    edges = [edge("start", "gate"), edge("gate", "llm1", "true"), *chain("llm1", "tmpl", "end1"),
             edge("gate", "llm2", "false"), edge("llm2", "end2")]
    result, rec = _run(dify_app(nodes, edges), f"end{blocking}", inputs={"query": "Hi?", "blocking": blocking})
    chunks = [e["data"]["text"] for e in rec.of("text_chunk")]
    assert chunks == (["Hi?", "\n", "Hello"] if blocking == 1 else ["Hi?", "\n", "Hel", "lo"])
    assert result.outputs == {"query": "Hi?", "text": "Hello"}
    keys = [(e["event"], (e.get("data") or {}).get("node_id")) for e in rec.events]
    llm = f"llm{blocking}"
    assert [k[0] for k in keys].index("text_chunk") < keys.index(("node_finished", llm))  # query before the llm ends


def test_llm_inside_a_loop_streams_through_its_answer_every_round():
    lp = node("lp", "loop", loop_count=2, break_conditions=[], loop_variables=[], start_node_id="s")
    nodes = [start(), lp, node("s", "loop-start", parent="lp"),
             node("llm", "test-stream", parent="lp", chunks=["Hel", "lo"], recorder="loop-live"),
             node("say", "answer", parent="lp", answer="[{{#llm.text#}}] "), node("done", "answer", answer="done")]
    edges = [*chain("start", "lp", "done"), *chain("s", "llm", "say")]
    result, rec = _run(dify_app(nodes, edges, mode="advanced-chat"), "loop-live", query="q")
    # the second round's chunks had reached the client before its llm node finished
    assert _StreamingNode.seen["loop-live"] == "[Hello] [Hello"
    assert [e["answer"] for e in rec.of("message")] == ["[", "Hel", "lo", "] ", "[", "Hel", "lo", "] ", "done"]
    assert result.answer == "[Hello] [Hello] done"


@pytest.mark.parametrize("parallel", [False, True])
def test_answer_inside_an_iteration_streams_when_rounds_run_one_at_a_time(parallel):
    it = node("it", "iteration", iterator_selector=["start", "items"], output_selector=["llm", "text"],
              start_node_id="is", is_parallel=parallel, parallel_nums=2)
    nodes = [start("items", types={"items": "json_object"}), it,
             node("is", "iteration-start", parent="it"),
             node("llm", "test-stream", parent="it", chunks=["a", "b"], recorder=f"iter-{parallel}"),
             node("say", "answer", parent="it", answer="{{#it.item#}}={{#llm.text#}};")]
    edges = [*chain("start", "it"), *chain("is", "llm", "say")]
    result, rec = _run(dify_app(nodes, edges, mode="advanced-chat"), f"iter-{parallel}",
                       inputs={"items": '["x", "y"]'}, query="q")
    assert result.status == "succeeded", result.error
    messages = [e["answer"] for e in rec.of("message")]
    if parallel:  # rounds side by side: each answer whole, in the order the rounds finish
        assert sorted(messages) == ["x=ab;", "y=ab;"]
    else:
        assert messages == ["x", "=", "a", "b", ";", "y", "=", "a", "b", ";"]
    assert sorted(result.answer.split(";")) == ["", "x=ab", "y=ab"]
