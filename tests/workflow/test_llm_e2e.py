"""W2's fixtures run end to end through the engine: an llm workflow on the built-in model (greedy, parity with
a direct call), and classifier / extractor+tool / retrieval / agent workflows on a scripted model."""

from __future__ import annotations

from pathlib import Path

import pytest

from athanor.llm.base import ChatResponse, ToolCall, Usage
from athanor.workflow.dsl import load_app
from athanor.workflow.engine import run_workflow
from athanor.workflow.services import Services
from athanor.workflow.validate import validate_app
from tests.workflow.w2_helpers import SCRIPTED, ScriptedChatModel

FIXTURES = Path(__file__).parent / "fixtures" / "w2"


def run(name: str, model, inputs=None, **kwargs):
    app = load_app(FIXTURES / name)
    services = Services(default_model=SCRIPTED)
    services.register_model(SCRIPTED, model)
    assert validate_app(app, services) == []
    events = []
    result = run_workflow(app, inputs or {}, services, observers=[events.append], **kwargs)
    return result, events


def text_of(events, kind) -> str:
    return "".join(e["data"]["text"] if "data" in e else e["answer"] for e in events if e["event"] == kind)


@pytest.mark.slow
def test_llm_workflow_on_the_builtin_model_matches_a_direct_call():
    from athanor.llm.base import load_chat_model

    model = load_chat_model("smollm2")
    app = load_app(FIXTURES / "llm_chat_w2.yml")
    services = Services(default_model="smollm2")
    services.register_model("smollm2", model)
    assert validate_app(app, services) == []
    events = []
    result = run_workflow(app, {"topic": "the sea"}, services, observers=[events.append])
    assert result.status == "succeeded", result.error
    answer = result.outputs["answer"]
    direct = model.chat([{"role": "system", "content": "You are a helpful assistant. Answer briefly."},
                         {"role": "user", "content": "Say one thing about the sea."}], temperature=0, max_tokens=8)
    assert answer == direct.text and answer.strip()
    assert result.outputs["reason"] == direct.finish_reason
    llm_chunks = [e["data"]["text"] for e in events
                  if e["event"] == "text_chunk" and e["data"].get("from_variable_selector") == ["llm", "text"]]
    assert "".join(llm_chunks) == answer and len(llm_chunks) > 1  # streamed through the end node as generated


@pytest.mark.parametrize("reply, branch", [("1", "billing"), ("Technical", "tech")])
def test_classifier_routes_to_one_branch_and_only_it_streams(reply, branch):
    model = ScriptedChatModel([reply, f"the {branch} reply"])
    result, events = run("classifier_branches_w2.yml", model, query="my card was charged twice")
    assert result.status == "succeeded", result.error
    label = {"billing": "Billing", "tech": "Tech"}[branch]
    assert result.answer == f"{label}: the {branch} reply"
    assert text_of(events, "message") == result.answer
    finished = {e["data"]["node_id"] for e in events if e["event"] == "node_finished"}
    other = "tech" if branch == "billing" else "billing"
    assert f"llm_{branch}" in finished and f"llm_{other}" not in finished
    system = {"billing": "You handle billing questions.", "tech": "You handle technical problems."}[branch]
    assert model.calls[1]["messages"][0]["content"] == system


def test_extractor_feeds_a_tool_node():
    model = ScriptedChatModel(['{"a": 6, "b": 7}'])
    result, _ = run("extract_tool_w2.yml", model, {"q": "what is six times seven?"})
    assert result.status == "succeeded", result.error
    assert result.outputs == {"product": "42", "ok": 1}


def test_failed_extraction_reaches_the_tool_as_empty_values():
    result, _ = run("extract_tool_w2.yml", ScriptedChatModel(["no idea"]), {"q": "hmm"})
    assert result.status == "succeeded", result.error  # as in Dify: __is_success 0, not a failed node
    assert result.outputs == {"product": "0", "ok": 0}


def test_retrieval_workflow_answers_from_the_knowledge_base():
    from athanor.rag.embed import get_embedder
    from athanor.rag.kb import KnowledgeBase

    kb = KnowledgeBase.create("w2-faq", embedder_obj=get_embedder("all-minilm-l6-v2"))
    kb.add_texts([("returns.md", "Returned items must be unused and sent back within 30 days."),
                  ("hours.md", "Support answers phone calls from 8 to 18 on weekdays.")])
    kb.close()
    model = ScriptedChatModel(["Within 30 days."])
    result, _ = run("rag_w2.yml", model, {"q": "how many days do I have to return an item?"})
    assert result.status == "succeeded", result.error
    assert [h["title"] for h in result.outputs["hits"]] == ["returns.md"]
    assert "sent back within 30 days" in model.calls[0]["messages"][0]["content"]


def test_retrieval_workflow_without_its_kb_is_warned_and_fails_at_run_time():
    app = load_app(FIXTURES / "rag_w2.yml")
    warnings: list = []
    assert validate_app(app, Services(default_model="smollm2"), warnings=warnings) == []  # only its node fails
    assert [(p.node_id, p.severity, "w2-faq" in p.message) for p in warnings] == [("kr", "warning", True)]
    result, _ = run("rag_w2.yml", ScriptedChatModel(["unused"]), {"q": "returns?"})
    assert result.status == "failed" and "w2-faq" in result.error


def test_agent_chat_app():
    call = ToolCall("c1", "calculator", '{"expression": "12*12"}')
    model = ScriptedChatModel([ChatResponse("", [call], "tool_calls", Usage()), "12 times 12 is 144."])
    result, events = run("agent_chat_w2.yml", model, query="12*12?")
    assert result.status == "succeeded", result.error
    assert result.answer == "12 times 12 is 144."
    assert model.calls[1]["messages"][-1]["content"] == "144"
    assert any(e["event"] == "agent_log" for e in events)
