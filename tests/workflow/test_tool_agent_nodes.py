"""tool and agent nodes: real athanor tools (calculator, current_time, a user tool) called with Dify's
variable / constant / mixed parameters; agents run with a scripted model through both strategies."""

from __future__ import annotations

import json
import re

import pytest

from athanor.agent.tools import FunctionTool
from athanor.llm.base import ChatResponse, ToolCall, Usage
from athanor.workflow.nodes.agentic import AgentNode, ToolNode
from athanor.workflow.nodes.base import WorkflowNodeError
from athanor.workflow.services import Services
from tests.workflow.w2_helpers import SCRIPTED, Run, ScriptedChatModel

# ------------------------------------------------------------------------------------------------ tool


def tool_data(name, params, provider_type="builtin", **extra) -> dict:
    return {"type": "tool", "provider_type": provider_type, "provider_id": "x", "provider_name": "x",
            "tool_name": name, "tool_parameters": params, "tool_configurations": {}, **extra}


def test_tool_calculator_with_mixed_parameter():
    run = Run({"start": {"a": 7}})
    data = tool_data("calculator", {"expression": {"type": "mixed", "value": "{{#start.a#}} * 6"}})
    result = run.execute(ToolNode, data)
    assert result.outputs == {"text": "42", "files": [], "json": []}
    assert result.inputs == {"expression": "7 * 6"}


def test_tool_current_time_with_configuration_and_variable():
    run = Run({"start": {"tz": "Asia/Tokyo"}})
    data = tool_data("current_time", {"timezone": {"type": "variable", "value": ["start", "tz"]}},
                     tool_configurations={"format": "%Y-%m-%d", "dify_only_setting": 1})
    result = run.execute(ToolNode, data)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", result.outputs["text"])
    assert result.process_data["ignored_arguments"] == ["dify_only_setting"]


def test_tool_from_services_returns_json():
    lookup = FunctionTool("lookup", "Find a user.", {"type": "object", "properties": {"uid": {"type": "integer"}},
                                                     "required": ["uid"]},
                          lambda uid: {"uid": uid, "name": "Ada"})
    services = Services(tools={"lookup": lookup})
    run = Run({"start": {"uid": "3"}}, services=services)
    result = run.execute(ToolNode, tool_data("lookup", {"uid": {"type": "variable", "value": ["start", "uid"]}},
                                             provider_type="mcp"))
    assert result.outputs["json"] == [{"uid": 3, "name": "Ada"}]
    assert json.loads(result.outputs["text"])["name"] == "Ada"


def test_tool_unknown_is_a_validation_warning_and_a_node_error():
    from athanor.workflow.nodes.base import NodeWarning

    data = tool_data("ddgo_search", {"query": {"type": "constant", "value": "x"}})
    problems = ToolNode("t", data).tool_problems(None)
    assert problems == [("tool x/ddgo_search is not installed (bind it to a built-in or MCP tool: "
                         "--bind-tool DIFY_TOOL=OUR_TOOL or a bindings file)")]
    assert isinstance(problems[0], NodeWarning)  # a warning: the app validates, this node fails at run time
    with pytest.raises(WorkflowNodeError, match="tool x/ddgo_search is not installed"):
        Run().execute(ToolNode, data)
    assert ToolNode("t", tool_data("mcp_tool", {}, provider_type="mcp")).tool_problems(None) == []  # run time


def test_tool_failure_fails_the_node():
    data = tool_data("calculator", {"expression": {"type": "constant", "value": "import os"}})
    with pytest.raises(WorkflowNodeError, match="calculator"):
        Run().execute(ToolNode, data)


# ------------------------------------------------------------------------------------------------ agent


def agent_data(strategy="function_calling", tools=("calculator",), **extra) -> dict:
    entries = [{"enabled": True, "provider_name": "p", "tool_name": t, "type": "builtin", "parameters": {},
                "settings": {}} for t in tools]
    entries.append({"enabled": False, "provider_name": "x", "tool_name": "weather", "type": "builtin"})
    return {"type": "agent", "agent_strategy_provider_name": "langgenius/agent/agent",
            "agent_strategy_name": strategy, "agent_parameters": {
                "model": {"type": "constant", "value": {"provider": "langgenius/openai/openai", "model": "gpt-4o-mini",
                                                        "mode": "chat", "completion_params": {}}},
                "tools": {"type": "constant", "value": entries},
                "instruction": {"type": "constant", "value": "Help with {{#start.topic#}}."},
                "query": {"type": "constant", "value": "{{#sys.query#}}"},
                "maximum_iterations": {"type": "constant", "value": 3}}, **extra}


def test_agent_function_calling_runs_the_tool_and_streams_the_answer():
    call = ToolCall("c1", "calculator", json.dumps({"expression": "6*7"}))
    model = ScriptedChatModel([ChatResponse("", [call], "tool_calls", Usage()), "The answer is 42."])
    run = Run({"start": {"topic": "math"}}, system={"query": "what is 6*7?"}, model=model)
    result = run.execute(AgentNode, agent_data())
    assert result.outputs["text"] == "The answer is 42." and run.streamed() == "The answer is 42."
    first, second = model.calls
    assert first["messages"][0] == {"role": "system", "content": "Help with math."}
    assert first["messages"][-1] == {"role": "user", "content": "what is 6*7?"}
    assert [t["function"]["name"] for t in first["tools"]] == ["calculator"]  # the disabled tool is left out
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "c1", "content": "42"}
    kinds = [data["label"] for event, data in run.events if event == "agent_log"]
    assert kinds == ["tool_call", "tool_result", "answer"]


def test_agent_react_strategy():
    model = ScriptedChatModel(['Thought: Do I need to use a tool? Yes\nAction: calculator\nAction Input: {"expression": "2+2"}',
                               "Thought: Do I need to use a tool? No\nAI: It is 4."])
    run = Run({"start": {"topic": "sums"}}, system={"query": "2+2?"}, model=model)
    result = run.execute(AgentNode, agent_data("ReAct"))
    assert result.outputs["text"] == "It is 4."
    assert "calculator" in model.calls[0]["messages"][0]["content"]
    assert model.calls[1]["messages"][-1]["content"] == "Observation: 4"


def test_agent_preset_settings_are_fixed_arguments():
    data = agent_data(tools=("current_time",))
    data["agent_parameters"]["tools"]["value"][0]["settings"] = {"format": {"value": "%Y"}, "timezone": {"value": "UTC"}}
    call = ToolCall("c1", "current_time", "{}")
    model = ScriptedChatModel([ChatResponse("", [call], "tool_calls", Usage()), "done"])
    run = Run({"start": {"topic": "time"}}, system={"query": "year?"}, model=model)
    run.execute(AgentNode, data)
    assert model.calls[0]["tools"][0]["function"]["parameters"]["properties"] == {}  # both preset
    assert re.fullmatch(r"\d{4}", model.calls[1]["messages"][-1]["content"])


def test_agent_without_answer_fails_the_node():
    call = ToolCall("c1", "calculator", json.dumps({"expression": "1+1"}))
    model = ScriptedChatModel([ChatResponse("", [call], "tool_calls", Usage())], repeat_last=True)
    run = Run({"start": {"topic": "x"}}, system={"query": "loop"}, model=model)
    with pytest.raises(WorkflowNodeError, match="stopped after 3 steps"):
        run.execute(AgentNode, agent_data())


def test_agent_checks():
    assert AgentNode("a", agent_data()).check(None) == [] and AgentNode("a", agent_data()).tool_problems() == []
    node = AgentNode("a", agent_data("tree_of_thought", tools=("calculator", "ddgo_search")))
    problems = node.check(None) + node.tool_problems(None)
    assert any("tree_of_thought" in p for p in problems) and any("ddgo_search" in p for p in problems)
    assert not any("weather" in p for p in problems)  # disabled tools are not needed


def test_agent_model_comes_from_the_model_map():
    services = Services(model_map={"gpt-4o-mini": SCRIPTED})
    services.register_model(SCRIPTED, ScriptedChatModel(["plain answer"]))
    run = Run({"start": {"topic": "x"}}, system={"query": "hi"}, services=services)
    assert run.execute(AgentNode, agent_data()).outputs["text"] == "plain answer"


def test_node_model_reads_llm_and_agent_shapes():
    from athanor.workflow.prompting import node_model

    assert node_model({"model": {"name": "m"}}) == {"name": "m"}
    assert node_model(agent_data()) == {"provider": "langgenius/openai/openai", "name": "gpt-4o-mini", "mode": "chat",
                                        "completion_params": {}}
    assert node_model({"type": "tool"}) is None
