"""Real exported Dify apps from public repositories (fixtures/w2/real/, each file's first line names its source):
they load, validate with every unsupported part listed as a problem, and run where we have what they need.

- svcvit_seo_slug_generator.yml: start -> llm -> end (workflow).
- dify_chatflow_time_tool_static_output_workflow.yml: Dify's own fixture; time tool -> template -> answer.
- svcvit_agent_tool_calling.yml: agent node (function_calling) with current_time, ddgo_search and a disabled
  weather tool; ddgo_search is not ours, so validation lists it; it runs once a tool of that name is supplied.
- svcvit_reply_by_user_intent.yml: llm (memory, vision) -> question-classifier -> llm | knowledge-retrieval -> llm
  -> variable-aggregator -> llm -> end; its dataset id names a kb we create, then both classes run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from athanor.agent.tools import FunctionTool
from athanor.llm.base import ChatResponse, ToolCall, Usage
from athanor.workflow.dsl import load_app
from athanor.workflow.engine import run_workflow
from athanor.workflow.services import Services
from athanor.workflow.validate import validate_app
from tests.workflow.w2_helpers import SCRIPTED, ScriptedChatModel

REAL = Path(__file__).parent / "fixtures" / "w2" / "real"
DATASET = "be517915-1dd5-4d09-a67d-4d5e4e4b21a8"


def services_with(model=None, **kwargs) -> Services:
    services = Services(default_model=SCRIPTED, **kwargs)
    if model is not None:
        services.register_model(SCRIPTED, model)
    return services


def problems(app, services=None, warnings: list | None = None) -> list[tuple[str, str]]:
    found = validate_app(app, services or Services(default_model=SCRIPTED), warnings=warnings)
    return [(p.node_id, p.message) for p in found]


def test_every_real_file_names_its_source_and_loads_like_plain_yaml():
    files = sorted(REAL.glob("*.yml"))
    assert len(files) == 4
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert re.match(r"# Source: github\.com/[\w.-]+/[\w.-]+, .+ \(commit [0-9a-f]{40}\)", text)
        doc = yaml.safe_load(text)
        app = load_app(path)
        assert app.mode == doc["app"]["mode"] and len(app.nodes) == len(doc["workflow"]["graph"]["nodes"])


def test_seo_slug_generator_runs_with_the_dsl_prompt():
    app = load_app(REAL / "svcvit_seo_slug_generator.yml")
    assert problems(app) == []
    assert "deepseek" in problems(app, Services())[0][1]  # no model map, no default: said up front
    model = ScriptedChatModel(["how-to-bake-sourdough-bread"])
    result = run_workflow(app, {"title": "How to bake sourdough bread at home"}, services_with(model))
    assert result.status == "succeeded", result.error
    assert result.outputs == {"output": "how-to-bake-sourdough-bread"}
    system, user = model.calls[0]["messages"]
    assert system["content"].startswith("This GPT will convert input titles or content into SEO-friendly English")
    assert user == {"role": "user", "content": "How to bake sourdough bread at home"}
    assert model.calls[0]["options"] == {"temperature": 1}


def test_difys_time_tool_chatflow_runs_without_a_model():
    app = load_app(REAL / "dify_chatflow_time_tool_static_output_workflow.yml")
    assert problems(app, Services()) == []
    events = []
    result = run_workflow(app, {}, Services(), observers=[events.append], query="anything")
    assert result.status == "succeeded", result.error
    assert result.answer == "hello, dify!"
    tool_done = next(e["data"] for e in events if e["event"] == "node_finished" and e["data"]["node_id"] == "1754336729904")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", tool_done["outputs"]["text"])


def search_tool(calls: list) -> FunctionTool:
    """A stand-in for DuckDuckGo: searches a fixed local list (no network here)."""
    pages = {"athanor": "athanor runs Dify workflows with local models."}

    def ddgo_search(query: str) -> str:
        calls.append(query)
        return "\n".join(v for k, v in pages.items() if k in query.lower()) or "no results"

    return FunctionTool("ddgo_search", "Search the web.", {"type": "object", "properties": {
        "query": {"type": "string"}}, "required": ["query"]}, ddgo_search)


def test_agent_app_lists_its_missing_tool_then_runs_when_one_is_supplied():
    app = load_app(REAL / "svcvit_agent_tool_calling.yml")
    warnings: list = []
    assert problems(app, warnings=warnings) == []  # a missing marketplace tool is a warning: only its node fails
    assert [(w.node_id, w.severity) for w in warnings] == [("1739781971571", "warning")]
    assert "ddgo_search is not installed" in warnings[0].message
    searches: list = []
    call = ToolCall("c1", "ddgo_search", '{"query": "what is athanor"}')
    model = ScriptedChatModel([ChatResponse("", [call], "tool_calls", Usage()), "athanor runs Dify workflows."])
    services = services_with(model, tools={"ddgo_search": search_tool(searches)})
    result = run_workflow(app, {}, services, query="What is athanor?")
    assert result.status == "succeeded", result.error
    assert result.answer == "athanor runs Dify workflows."
    assert searches == ["what is athanor"]
    first = model.calls[0]
    assert first["messages"][0] == {"role": "system", "content": "根据用户的需求，调用不同工具，回复用的内容。"}
    assert [t["function"]["name"] for t in first["tools"]] == ["current_time", "ddgo_search"]  # weather is disabled
    assert first["tools"][0]["function"]["parameters"]["properties"] == {}  # format and timezone are preset


@pytest.fixture
def intent_kb():
    from athanor.rag.embed import get_embedder
    from athanor.rag.kb import KnowledgeBase

    kb = KnowledgeBase.create(DATASET, embedder_obj=get_embedder("all-minilm-l6-v2"))
    kb.add_texts([("wristband.md", "To pair the wristband, open the app, tap Devices and hold the band near the phone."),
                  ("account.md", "To reset your password, tap Forgot password on the login screen.")])
    kb.close()


@pytest.mark.parametrize("route", ["health", "help"])
def test_intent_app_runs_each_class(intent_kb, route):
    app = load_app(REAL / "svcvit_reply_by_user_intent.yml")
    assert problems(app) == []  # the dataset now exists
    reply = {"health": "1", "help": "使用帮助"}[route]
    model = ScriptedChatModel(["意图: 手环配对", reply, f"{route} answer", "最终回复"])
    events = []
    result = run_workflow(app, {"query": "how do I pair my wristband?"}, services_with(model),
                          observers=[events.append])
    assert result.status == "succeeded", result.error
    assert result.outputs == {"output": "最终回复"}
    ran = [e["data"]["node_id"] for e in events if e["event"] == "node_finished"]
    branch_llm, other_llm = ("1718246916748", "1718246959048") if route == "health" else ("1718246959048", "1718246916748")
    assert branch_llm in ran and other_llm not in ran
    assert ("1721623802451" in ran) == (route == "help")  # retrieval only on the help branch
    third = model.calls[2]["messages"]
    if route == "help":
        assert "open the app, tap Devices" in third[0]["content"]  # {{#context#}} <- knowledge results
        assert third[1] == {"role": "user", "content": "意图: 手环配对"}
    else:
        assert third[1] == {"role": "user", "content": "意图: 手环配对"}  # context = the first llm's text
    final = model.calls[3]["messages"]
    assert final[0]["content"].endswith(f"{route} answer") and final[1]["content"] == f"{route} answer"
    first_done = next(e["data"] for e in events if e["event"] == "node_finished"
                      and e["data"]["node_id"] == "1718246807593")
    assert "vision" in first_done["process_data"]["note"]
