"""Apps as Dify exports them (tests/workflow/fixtures/dify/, written in the shape of Dify 1.x's Export DSL:
version header, marketplace `dependencies`, `custom-note` nodes, plugin tool nodes with provider_id /
provider_type, agent nodes with agent_strategy_provider_name, chat / agent-chat / completion `model_config`s).

Each file is validated and run; the counts are asserted exactly so a regression (or a fix) shows:
validate: 10 of 11 pass (the marketplace TOD agent strategy is refused, naming its plugin); run without
bindings: 7 of 11 (knowledge bases and web-search tools that are not here fail their node); with a bindings
file (dataset ids -> local knowledge bases, search tools -> the built-in webscraper): 10 of 11.
The model is scripted (tests/agent/scripted.py): what is checked is the graph, the prompts and the tools.
"""

from __future__ import annotations

import datetime
import http.server
import json
import threading
from pathlib import Path

import pytest

from athanor.llm.base import ChatResponse, ToolCall, Usage
from athanor.workflow.dsl import dump_app, load_app
from athanor.workflow.engine import run_workflow
from athanor.workflow.services import Services
from athanor.workflow.validate import validate_app
from tests.agent.scripted import ScriptedChatModel

FIXTURES = Path(__file__).parent / "fixtures" / "dify"
SPEC = "scripted-dify-apps"
HANDBOOK_ID = "7c2f6a0e-3b1d-4c5e-9f8a-2d4b6c8e0a13"
POLICY_ID = "0d4e3f2a-9b8c-4d7e-a6f5-1e2d3c4b5a69"


@pytest.fixture(scope="module")
def site():
    """A local web server: /status.json (JSON) and /page.html (HTML with a script to drop)."""
    pages = {"/status.json": (b'{"queue": {"waiting": 14, "open": true}}', "application/json"),
             "/page.html": ((b"<html><head><script>var x = 1;</script><style>p{}</style></head><body><h1>Lighthouse"
                            b"</h1><p>The lamp turns every 10 seconds.</p></body></html>"), "text/html")}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body, kind = pages.get(self.path, (b"not found", "text/plain"))
            self.send_response(200 if self.path in pages else 404)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def bases():
    from athanor.rag.embed import get_embedder
    from athanor.rag.kb import KnowledgeBase

    emb = get_embedder("all-minilm-l6-v2")
    for name, docs in {"handbook": [("leave.md", "Staff get 25 days of paid leave a year.")],
                       "policy": [("travel.md", "Train travel is first class for trips over four hours.")]}.items():
        kb = KnowledgeBase.create(name, embedder_obj=emb)
        kb.add_texts(docs)
        kb.close()


def _services(model, **kwargs) -> Services:
    services = Services(default_model=SPEC, **kwargs)
    services.register_model(SPEC, model)
    return services


def _checked(name: str, services=None) -> tuple[list[str], list[str]]:
    warnings: list = []
    errors = validate_app(load_app(FIXTURES / f"{name}.yml"), services, warnings=warnings)
    return [str(p) for p in errors], [str(w) for w in warnings]


def _bound() -> dict:
    return {"tool_bindings": {"tavily/tavily_search": "webscraper", "wikipedia_search": "webscraper"},
            "kb_bindings": {HANDBOOK_ID: "handbook", POLICY_ID: "policy"}}


# --------------------------------------------------------------------------------------------- validation


def test_every_file_is_a_dify_export_and_the_counts_hold():
    files = sorted(FIXTURES.glob("*.yml"))
    assert len(files) == 11
    modes, valid, warned = {}, [], {}
    for f in files:
        app = load_app(f)
        assert app.version.startswith("0.3") and app.raw["kind"] == "app" and app.raw["dependencies"]
        modes[app.mode] = modes.get(app.mode, 0) + 1
        errors, warnings = _checked(f.stem)
        if not errors:
            valid.append(f.stem)
        warned[f.stem] = len(warnings)
        assert dump_app(app) == dump_app(load_app(dump_app(app)))  # round-trips; the graph of easy apps is not written
    assert modes == {"chat": 3, "agent-chat": 2, "completion": 1, "workflow": 2, "advanced-chat": 3}
    assert len(valid) == 10 and "chatflow_tod_agent" not in valid
    assert warned == {"agent_chat_time_math": 0, "chat_advanced_prompt": 0, "agent_chat_web_research": 2, "chat_handbook_kb": 1,
                      "chat_persona": 0, "chatflow_policy_kb": 1, "chatflow_tod_agent": 0,
                      "chatflow_translate_failbranch": 1, "completion_translate": 0, "workflow_page_facts": 0,
                      "workflow_search_digest": 3}


def test_notes_are_skipped_and_not_written_into_the_graph():
    app = load_app(FIXTURES / "workflow_search_digest.yml")
    assert "1741000000090" not in app.nodes and len(app.nodes) == 6
    assert any(n["type"] == "custom-note" for n in app.raw["workflow"]["graph"]["nodes"])  # kept for export


def test_warnings_name_the_plugin_tool_and_the_dataset():
    _, warnings = _checked("workflow_search_digest")
    assert warnings[0] == ("warning: 1741000000002: tool langgenius/duckduckgo/duckduckgo/ddgo_search is not "
                           "installed (bind it to a built-in or MCP tool: --bind-tool DIFY_TOOL=OUR_TOOL or a "
                           "bindings file)")
    _, warnings = _checked("chat_handbook_kb")
    assert warnings == [(f"warning: knowledge: dataset '{HANDBOOK_ID}' is not a knowledge base here (create it with "
                        "`athanor kb create NAME` and bind it: --bind-kb DATASET_ID=NAME or a bindings file)")]


def test_bindings_silence_the_warnings(bases):
    for name in ("chat_handbook_kb", "chatflow_policy_kb", "agent_chat_web_research"):
        assert _checked(name, Services(default_model=SPEC, **_bound())) == ([], [])
    errors, _ = _checked("agent_chat_web_research", Services(default_model=SPEC, tools={"other": object()},
                                                             tool_bindings={"tavily_search": "no_such_tool"}))
    assert errors == [("agent: tool langgenius/tavily/tavily/tavily_search is bound to 'no_such_tool', which is "
                       "neither a built-in tool nor offered by the connected MCP servers (they offer: other)")]


def test_plugin_agent_strategy_is_refused_naming_the_plugin():
    errors, _ = _checked("chatflow_tod_agent")
    refusal = ("agent strategy 'TOD' comes from the Dify plugin 'lysander/tod_agent/tod_agent', which does not run "
               "here (built-in strategies: function_calling, ReAct)")
    assert errors == [f"1743000000002: {refusal}"]
    result = run_workflow(load_app(FIXTURES / "chatflow_tod_agent.yml"), {}, _services(ScriptedChatModel(["x"])),
                          query="Book a table")
    assert result.status == "failed" and refusal in result.error


# --------------------------------------------------------------------------------------------- runs


def _run(name: str, model, inputs=None, query: str = "", **services):
    return run_workflow(load_app(FIXTURES / f"{name}.yml"), inputs or {}, _services(model, **services), query=query)


def test_chat_and_completion_apps_run_their_prompts():
    model = ScriptedChatModel(["Bonjour !", "Buenos días"])
    chat = _run("chat_persona", model, {"language": "French"}, "Hi")
    assert chat.status == "succeeded" and chat.answer == "Bonjour !"
    assert model.calls[0]["messages"] == [
        {"role": "system", "content": ("You are a friendly lighthouse keeper. Answer the user in one short paragraph, "
                                       "in French.")},
        {"role": "user", "content": "Hi"}]
    assert model.calls[0]["options"]["temperature"] == 0.7
    done = _run("completion_translate", model, {"query": "Good morning", "target_language": "Spanish"})
    assert done.status == "succeeded" and done.outputs == {"answer": "Buenos días"}


def test_advanced_chat_prompt_keeps_its_messages_and_memory():
    model = ScriptedChatModel(["Try restarting it.", "Glad it works."])
    app = load_app(FIXTURES / "chat_advanced_prompt.yml")
    services = _services(model)
    first = run_workflow(app, {"product": "Lumen lamps", "tier": "pro"}, services, query="It flickers.")
    assert first.status == "succeeded" and first.answer == "Try restarting it."
    assert model.calls[0]["messages"] == [
        {"role": "system", "content": "You support customers of Lumen lamps. Be brief and polite."},
        {"role": "user", "content": "Customer tier: pro"}, {"role": "user", "content": "It flickers."}]
    assert model.calls[0]["options"] == {"max_tokens": 256, "temperature": 0.2}
    history = [{"role": "user", "content": "It flickers."}, {"role": "assistant", "content": "Try restarting it."}]
    run_workflow(app, {"product": "Lumen lamps"}, services, query="That worked!", history=history)
    assert [m["content"] for m in model.calls[1]["messages"][2:]] == ["It flickers.", "Try restarting it.",
                                                                       "That worked!"]
    assert model.calls[1]["messages"][1]["content"] == "Customer tier: free"  # the select's default


def test_agent_chat_calls_difys_math_tool_under_its_name():
    model = ScriptedChatModel([ChatResponse("", [ToolCall("c1", "eval_expression", '{"expression": "17*23"}')],
                                            "tool_calls", Usage()), "391"])
    result = _run("agent_chat_time_math", model, query="What is 17*23?")
    assert result.status == "succeeded" and result.answer == "391"
    assert model.calls[1]["messages"][-1]["content"] == "391"  # the tool's result went back to the model
    tools = {t["function"]["name"]: t["function"]["parameters"] for t in model.calls[0]["tools"]}
    assert set(tools) == {"current_time", "eval_expression"}
    assert tools["current_time"]["properties"] == {}  # format and timezone are fixed by the app


def test_missing_plugin_tools_fail_their_node_under_its_error_strategy():
    model = ScriptedChatModel(["digest", "Guten Morgen"])
    digest = _run("workflow_search_digest", model, {"topic": "lighthouses"})
    assert digest.status == "partial-succeeded" and digest.outputs == {"digest": "digest"}
    assert digest.exceptions_count == 3
    assert model.calls[0]["messages"][1]["content"].endswith("arXiv: no papers")  # the default value
    chat = _run("chatflow_translate_failbranch", model, query="Good morning")
    assert chat.status == "partial-succeeded" and chat.answer == "Guten Morgen"  # the fail branch answered


def test_without_bindings_the_missing_parts_fail_the_run():
    model = ScriptedChatModel(["x"], repeat_last=True)
    kb = _run("chat_handbook_kb", model, query="How much leave?")
    assert kb.status == "failed" and HANDBOOK_ID in kb.error
    web = _run("agent_chat_web_research", model, query="Lighthouses?")
    assert web.status == "failed" and "tool langgenius/tavily/tavily/tavily_search is not installed" in web.error


def test_bound_knowledge_bases_feed_the_prompt(bases):
    model = ScriptedChatModel(["25 days.", "First class."])
    kb = _run("chat_handbook_kb", model, query="How much paid leave do staff get?", **_bound())
    assert kb.status == "succeeded" and kb.answer == "25 days."
    assert "25 days of paid leave" in model.calls[0]["messages"][0]["content"]
    policy = _run("chatflow_policy_kb", model, query="How do I travel by train?", **_bound())
    assert policy.status == "succeeded" and "first class for trips" in model.calls[1]["messages"][0]["content"]


def test_bound_search_tool_runs_the_local_webscraper(site):
    action = json.dumps({"url": f"{site}/page.html"})
    model = ScriptedChatModel([f"Thought: Do I need to use a tool? Yes\nAction: tavily_search\nAction Input: {action}",
                               "Thought: Do I need to use a tool? No\nAI: Every 10 seconds."])
    result = _run("agent_chat_web_research", model, query="How often does the lamp turn?", **_bound())
    assert result.status == "succeeded", result.error
    assert result.answer == "Every 10 seconds."
    observation = model.calls[1]["messages"][-1]["content"]
    assert "Lighthouse\nThe lamp turns every 10 seconds." in observation and "var x" not in observation


def test_builtin_webscraper_json_math_and_time_tools_chain(site):
    result = _run("workflow_page_facts", ScriptedChatModel([]), {"url": f"{site}/status.json"})
    assert result.status == "succeeded", result.error
    assert result.outputs == {"waiting": "14", "minutes": "42", "year": str(datetime.datetime.now(datetime.UTC).year)}
    outside = _run("workflow_page_facts", ScriptedChatModel([]), {"url": "http://example.com/status.json"})
    assert outside.status == "failed" and "not allowed" in outside.error


def test_run_counts_with_and_without_bindings(bases, site):
    """The numbers for the closing note: how many of the 10 files run, before and after binding."""
    def runs(**bound) -> list[str]:
        ok = []
        for f in sorted(FIXTURES.glob("*.yml")):
            app = load_app(f)
            inputs = {"topic": "x", "url": f"{site}/status.json", "query": "hi", "target_language": "French",
                      "language": "English", "product": "lamps"}
            model = ScriptedChatModel(["AI: fine"], repeat_last=True)
            result = run_workflow(app, inputs, _services(model, **bound), query="hello")
            if result.status in ("succeeded", "partial-succeeded"):
                ok.append(f.stem)
        return ok

    assert len(runs()) == 7
    assert len(runs(**_bound())) == 10
