"""The ReAct agent with a scripted model: the parser's tolerance, error Observations, and honest limits."""

from __future__ import annotations

import pytest

from athanor.agent.calculator import calculator
from athanor.agent.react import ReActAgent
from athanor.agent.react_parser import Action, Final, ParseError, parse_react
from athanor.agent.tools import tool
from athanor.llm.base import ChatModel
from tests.agent.scripted import ScriptedChatModel

USE_CALC = "Thought: Do I need to use a tool? Yes\nAction: calculator\nAction Input: 17*23"
ANSWER = "Thought: Do I need to use a tool? No\nAI: 17*23 is 391."


@pytest.mark.parametrize("text, tool, tool_input", [
    (USE_CALC, "calculator", "17*23"),
    ("thought:do i need to use a tool? yes\nACTION:calculator\naction input:   17 * 23  ", "calculator", "17 * 23"),
    ("**Thought:** yes\n**Action:** `calculator`\n**Action Input:**\n```json\n{\"expression\": \"17*23\"}\n```",
     "calculator", '{"expression": "17*23"}'),
    ("```\nThought: Do I need to use a tool? Yes\nAction: [calculator]\nAction Input: \"17*23\"\n```", "calculator", '"17*23"'),
    ("Action: calculator(17*23)", "calculator", "17*23"),
    ('{"action": "calculator", "action_input": {"expression": "2+2"}}', "calculator", '{"expression": "2+2"}'),
    ("Thought: yes\nAction: python\nAction Input:\nx = 2\nprint(x)", "python", "x = 2\nprint(x)"),
    # a model that invents its own Observation and answer: only the action counts
    (USE_CALC + "\nObservation: 400\nThought: Do I need to use a tool? No\nAI: 400", "calculator", "17*23"),
])
def test_parser_reads_actions_forgivingly(text, tool, tool_input):
    parsed = parse_react(text)
    assert isinstance(parsed, Action)
    assert (parsed.tool, parsed.tool_input) == (tool, tool_input)


@pytest.mark.parametrize("text, answer", [
    (ANSWER, "17*23 is 391."),
    ("  final answer :  391  ", "391"),
    ("Thought: Do I need to use a tool? No\nThe answer is 391.", "The answer is 391."),
    ("AI: line one\nline two", "line one\nline two"),
])
def test_parser_reads_answers(text, answer):
    parsed = parse_react(text)
    assert isinstance(parsed, Final) and parsed.answer == answer


@pytest.mark.parametrize("text", ["", "I think it is 391", "Action: none\nAI:", "AI:   ", "Action: calculator"])
def test_parser_errors_explain_the_format(text):
    parsed = parse_react(text)
    assert isinstance(parsed, ParseError)
    assert "Action:" in parsed.message and "AI:" in parsed.message


def test_scripted_model_implements_the_protocol():
    assert isinstance(ScriptedChatModel([]), ChatModel)


def test_tool_then_answer_streams_every_event():
    model = ScriptedChatModel([USE_CALC, ANSWER])
    events = list(ReActAgent(model, [calculator]).stream("What is 17*23?"))
    assert [e.kind for e in events] == ["thought", "tool_call", "tool_result", "thought", "answer"]
    assert events[1].tool == "calculator" and events[1].arguments == {"expression": "17*23"}
    assert events[2].text == "391"
    assert events[-1].text == "17*23 is 391." and events[-1].step == 2
    # the second request carries the first reply and the real Observation
    second = model.calls[1]["messages"]
    assert second[-2] == {"role": "assistant", "content": USE_CALC}
    assert second[-1] == {"role": "user", "content": "Observation: 391"}
    system = model.calls[0]["messages"][0]["content"]
    assert "calculator" in system and "Do I need to use a tool? Yes" in system and "AI:" in system
    assert "Observation:" in model.calls[0]["options"]["stop"][1]


def test_unknown_tool_becomes_an_observation_listing_valid_names():
    model = ScriptedChatModel(["Thought: yes\nAction: calculater\nAction Input: 1+1", ANSWER])
    result = ReActAgent(model, [calculator]).run("q")
    assert result.answer == "17*23 is 391."
    errors = [e for e in result.events if e.kind == "error"]
    assert len(errors) == 1 and "'calculater' is not a valid tool" in errors[0].text
    observation = model.calls[1]["messages"][-1]["content"]
    assert observation.startswith("Observation:") and "Valid tool names: calculator" in observation


def test_tool_name_case_is_forgiven():
    model = ScriptedChatModel(["Action: Calculator\nAction Input: 2+3", ANSWER])
    events = ReActAgent(model, [calculator]).run("q").events
    assert any(e.kind == "tool_result" and e.text == "5" for e in events)


def test_parse_error_becomes_an_observation_with_the_format():
    model = ScriptedChatModel(["I am not sure.", ANSWER])
    result = ReActAgent(model, [calculator]).run("q")
    assert result.answer == "17*23 is 391."
    observation = model.calls[1]["messages"][-1]["content"]
    assert "Could not find 'Action:' or 'AI:'" in observation
    # the reminder names a real tool and its input, not placeholders a small model would copy
    assert 'Action: calculator\nAction Input: {"expression": "(2+3)*4"}' in observation


def test_bad_tool_input_and_tool_failure_are_observations():
    model = ScriptedChatModel(["Action: calculator\nAction Input: __import__('os')", ANSWER])
    result = ReActAgent(model, [calculator]).run("q")
    assert result.answer is not None
    observation = model.calls[1]["messages"][-1]["content"]
    assert "calculator failed" in observation and "not allowed" in observation

    model = ScriptedChatModel(["Action: calculator\nAction Input: {\"expression\": 1+}", ANSWER])
    ReActAgent(model, [calculator]).run("q")
    assert "does not parse" in model.calls[1]["messages"][-1]["content"]


def test_max_iterations_stops_honestly_without_an_answer():
    model = ScriptedChatModel([USE_CALC], repeat_last=True)
    result = ReActAgent(model, [calculator], max_iterations=3).run("q")
    assert result.answer is None
    assert result.stopped_reason == "stopped after 3 steps" and result.steps == 3
    assert result.events[-1].kind == "stopped"
    assert not any(e.kind == "answer" for e in result.events)
    assert len(model.calls) == 3
    assert result.text == "Agent stopped after 3 steps without an answer."


def test_wall_time_limit_stops_a_slow_model():
    model = ScriptedChatModel([USE_CALC], repeat_last=True, delay_s=0.05)  # 10 deltas -> 0.5 s per reply
    result = ReActAgent(model, [calculator], max_iterations=100, max_seconds=0.3).run("q")
    assert result.answer is None and result.stopped_reason.startswith("stopped: wall-time limit")
    assert len(model.calls) == 1  # the first reply alone outlasted the limit: no second one was asked for


def test_a_raising_tool_does_not_crash_the_agent():
    @tool
    def explode(x: str) -> str:
        """Always fails."""
        raise RuntimeError("boom")

    model = ScriptedChatModel(["Action: explode\nAction Input: now", ANSWER])
    result = ReActAgent(model, [explode]).run("q")
    assert result.answer is not None
    assert "explode failed: boom" in model.calls[1]["messages"][-1]["content"]


def test_long_observations_are_truncated():
    @tool
    def big() -> str:
        """Returns a lot."""
        return "x" * 10_000

    model = ScriptedChatModel(["Action: big\nAction Input: {}", ANSWER])
    ReActAgent(model, [big]).run("q")
    assert len(model.calls[1]["messages"][-1]["content"]) < 4200


def test_bad_agent_config_is_a_value_error():
    with pytest.raises(ValueError, match="max_iterations"):
        ReActAgent(ScriptedChatModel([]), [calculator], max_iterations=0)
    with pytest.raises(ValueError, match="unique"):
        ReActAgent(ScriptedChatModel([]), [calculator, calculator])
