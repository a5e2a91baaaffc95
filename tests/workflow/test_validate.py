"""Static validation: every problem at once, each with its node id."""

from __future__ import annotations

import pytest

from athanor.workflow.services import Services
from athanor.workflow.validate import validate_app
from tests.workflow.conftest import FIXTURES, chain, dify_app, edge, end, load, node, start


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.yml")), ids=lambda p: p.name)
def test_fixtures_are_valid(path):
    from athanor.workflow.dsl import load_app

    assert [str(p) for p in validate_app(load_app(path))] == []


def _problems(doc, services=None) -> list[str]:
    return [str(p) for p in validate_app(load(doc), services)]


def test_every_problem_reported_at_once_with_node_ids():
    nodes = [start("q"),
             node("mystery", "quantum-node"),
             node("t", "template-transform", template="{{ x }}", variables=[
                 {"variable": "x", "value_selector": ["start", "nope"]}]),
             node("a", "answer", answer="{{#ghost.text#}} {{#sys.query#}} {{#sys.bogus#}} {{#env.MISSING#}} "
                                        "{{#conversation.none#}}"),
             node("island", "template-transform", template="alone", variables=[]),
             node("later", "template-transform", template="", variables=[]),
             node("reads_later", "template-transform", template="{{ v }}", variables=[
                 {"variable": "v", "value_selector": ["later", "output"]}]),
             node("c1", "template-transform", template="", variables=[]),
             node("c2", "template-transform", template="", variables=[]),
             end(out=["t", "output"])]
    edges = [*chain("start", "mystery", "t", "end"), edge("start", "a"), edge("start", "reads_later"),
             edge("reads_later", "later"), edge("start", "c1"), edge("c1", "c2"), edge("c2", "c1"),
             edge("t", "nowhere")]
    problems = _problems(dify_app(nodes, edges))
    expected = [
        "mystery: unknown node type 'quantum-node'",
        "t: edge t-source-nowhere: target node 'nowhere' does not exist",
        "island: unreachable: no path from the start node",
        "t: variable #start.nope# is not defined",
        "a: variable #ghost.text# is not defined",
        "a: variable #sys.bogus# is not defined",
        "a: variable #env.MISSING# is not defined",
        "a: variable #conversation.none# is not defined",
        "reads_later: variable #later.output# refers to node 'later', which is not upstream",
    ]
    for message in expected:
        assert message in problems, (message, problems)
    cycle = [p for p in problems if "part of a cycle" in p]
    assert {p.split(":")[0] for p in cycle} == {"c1", "c2"}
    assert not any("sys.query" in p for p in problems)


def test_container_rules():
    it = node("it", "iteration", iterator_selector=["start", "items"], output_selector=["inner", "output"],
              start_node_id="it_start")
    nodes = [start("items"), it, node("it_start", "iteration-start", parent="it"),
             node("inner", "template-transform", parent="it", template="{{ v }}",
                  variables=[{"variable": "v", "value_selector": ["it", "item"]}]),
             node("orphan", "template-transform", parent="not_a_container", template="", variables=[]),
             end(out=["it", "output"], bad=["inner", "output"])]
    edges = [*chain("start", "it", "end"), edge("it_start", "inner"), edge("inner", "end")]
    problems = _problems(dify_app(nodes, edges))
    assert "orphan: parent 'not_a_container' is not an iteration or loop node" in problems
    assert "end: edge inner-source-end crosses an iteration/loop boundary" in problems
    assert not any(p.startswith("inner:") for p in problems)  # [it, item] is visible inside the iteration


def test_loop_body_may_repeat_but_a_cycle_inside_it_may_not():
    lp = node("lp", "loop", loop_count=2, break_conditions=[], loop_variables=[], start_node_id="s")
    nodes = [start(), lp, node("s", "loop-start", parent="lp"),
             node("x", "template-transform", parent="lp", template="", variables=[]),
             node("y", "template-transform", parent="lp", template="", variables=[]), end()]
    edges = [*chain("start", "lp", "end"), *chain("s", "x", "y"), edge("y", "x")]
    problems = _problems(dify_app(nodes, edges))
    assert {p.split(":")[0] for p in problems if "cycle" in p} == {"x", "y"}


def test_node_checks_and_model_problems():
    nodes = [start(), node("c", "code", code_language="javascript", code="function main() {}", variables=[],
                           outputs={}),
             node("g", "if-else", cases=[{"case_id": "a", "conditions": [
                 {"variable_selector": ["start", "x"], "comparison_operator": "roughly"}]}]),
             node("h", "http-request", method="fetch", url=""),
             node("llm", "llm", model={"provider": "openai", "name": "gpt-4o", "mode": "chat"},
                  prompt_template=[{"role": "user", "text": "hi"}], context={"enabled": False}),
             node("x", "template-transform", template="{% if %}", variables=[], error_strategy="explode"),
             end()]
    doc = dify_app(nodes, chain("start", "c", "g", "h", "llm", "x", "end"))
    problems = _problems(doc, Services())
    assert "c: code_language 'javascript' is not supported (only python3 runs here)" in problems
    assert any(p.startswith("g: case a condition #1: unknown comparison operator") for p in problems)
    assert "h: unknown method 'fetch'" in problems and "h: no url" in problems
    assert any(p.startswith("llm: model 'openai/gpt-4o' is not in the model map") for p in problems)
    assert any(p.startswith("x: template does not parse") for p in problems)
    assert "x: unknown error_strategy 'explode'" in problems
    assert not any(p.startswith("llm: model") for p in _problems(doc, Services(default_model="smollm2")))


def test_app_needs_its_end_or_answer_node():
    assert "workflow apps need an end node" in _problems(dify_app([start()], []))
    assert "advanced-chat apps need an answer node" in _problems(dify_app([start()], [], mode="advanced-chat"))
    assert "no start node" in _problems(dify_app([end()], []))


def _tool_and_agent_doc() -> dict:
    agent_model = {"provider": "langgenius/openai/openai", "model": "gpt-4o-mini", "mode": "chat",
                   "completion_params": {}, "type": "model-selector"}
    tools = [{"enabled": True, "provider_name": "crm", "tool_name": "lookup", "type": "builtin"},
             {"enabled": True, "provider_name": "srv", "tool_name": "add", "type": "mcp"}]
    agent = node("agent", "agent", agent_strategy_name="function_calling", agent_parameters={
        "model": {"type": "constant", "value": agent_model}, "tools": {"type": "constant", "value": tools},
        "query": {"type": "constant", "value": "{{#start.q#}}"}})
    tool = node("t", "tool", provider_type="builtin", provider_name="crm", tool_name="lookup",
                tool_parameters={"uid": {"type": "constant", "value": 1}})
    llm = node("llm", "llm", model={"provider": "openai", "name": "gpt-4o", "mode": "chat"},
               prompt_template=[{"role": "user", "text": "hi"}])
    return dify_app([start("q"), agent, tool, llm, end(out=["agent", "text"])],
                    chain("start", "agent", "t", "llm", "end"))


def test_agent_models_and_user_tools_are_checked_against_the_services():
    from athanor.agent.tools import FunctionTool

    doc = _tool_and_agent_doc()
    bare = _problems(doc)  # no services: built-in tools only, models unchecked
    assert not any("lookup" in p for p in bare)  # a tool that is not here is a warning: only its node fails
    warnings: list = []
    validate_app(load(doc), None, warnings=warnings)
    unknown = ("tool crm/lookup is not installed (bind it to a built-in or MCP tool: --bind-tool DIFY_TOOL=OUR_TOOL "
               "or a bindings file)")
    assert [str(w) for w in warnings] == [f"warning: agent: {unknown}", f"warning: t: {unknown}"]
    assert not any("model" in p or "'add'" in p for p in bare)  # an MCP tool is trusted until servers are given

    lookup = FunctionTool("lookup", "Find a user.", {"type": "object", "properties": {"uid": {"type": "integer"}}},
                          lambda uid: "Ada")
    services = Services(model_map={"gpt-4o": "smollm2"}, tools={"lookup": lookup})
    problems = _problems(doc, services)
    assert problems == [
        "agent: MCP tool 'add' (provider srv) is not offered by the connected MCP servers (they offer: lookup)",
        ("agent: model 'langgenius/openai/openai/gpt-4o-mini' is not in the model map and no default model is set "
         "(pass --model NAME or --model-map FILE)")]
    services.model_map["gpt-4o-mini"] = "smollm2"
    services.tools["add"] = lookup
    assert _problems(doc, services) == []
    bound = Services(tool_bindings={"crm/lookup": "calculator"})
    assert validate_app(load(_tool_and_agent_doc()), bound, check_models=False, warnings=warnings) == []
