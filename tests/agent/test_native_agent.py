"""The native tool-calling agent: parallel calls, tool messages, errors as tool results, honest limits; and
through the real openai SDK against the stub server that streams tool calls in fragments."""

from __future__ import annotations

import threading

from athanor.agent.calculator import calculator
from athanor.agent.memory import BufferMemory
from athanor.agent.native import ToolCallingAgent
from athanor.agent.tools import tool
from athanor.llm.base import ChatResponse, ToolCall, Usage, load_chat_model
from tests.agent.scripted import ScriptedChatModel
from tests.llm.openai_stub import serve_stub


def calls(*pairs):
    return ChatResponse("", [ToolCall(f"c{i}", name, args) for i, (name, args) in enumerate(pairs)], "tool_calls", Usage())


def test_parallel_calls_then_answer():
    model = ScriptedChatModel([calls(("calculator", '{"expression": "17*23"}'), ("calculator", '{"expression": "2+2"}')),
                               "17*23 = 391 and 2+2 = 4."])
    result = ToolCallingAgent(model, [calculator]).run("What are 17*23 and 2+2?")
    assert result.answer == "17*23 = 391 and 2+2 = 4." and result.steps == 2
    assert [e.kind for e in result.events] == ["tool_call", "tool_call", "tool_result", "tool_result", "answer"]
    assert [e.text for e in result.events if e.kind == "tool_result"] == ["391", "4"]
    assert result.events[0].arguments == {"expression": "17*23"}
    second = model.calls[1]["messages"]
    assert second[-3]["role"] == "assistant" and [c["id"] for c in second[-3]["tool_calls"]] == ["c0", "c1"]
    assert second[-2:] == [{"role": "tool", "tool_call_id": "c0", "content": "391"},
                           {"role": "tool", "tool_call_id": "c1", "content": "4"}]
    assert model.calls[0]["tools"][0]["function"]["name"] == "calculator"


def test_parallel_calls_really_run_at_the_same_time():
    barrier = threading.Barrier(3, timeout=30)  # passes only when all three calls are in flight together

    @tool
    def meet(x: str) -> str:
        """Waits for the other calls."""
        barrier.wait()
        return x

    model = ScriptedChatModel([calls(("meet", '{"x": "a"}'), ("meet", '{"x": "b"}'), ("meet", '{"x": "c"}')), "done"])
    result = ToolCallingAgent(model, [meet]).run("q")
    assert [e.text for e in result.events if e.kind == "tool_result"] == ["a", "b", "c"]
    assert not barrier.broken


def test_unknown_tools_and_bad_arguments_go_back_as_tool_results():
    model = ScriptedChatModel([calls(("calculater", "{}"), ("calculator", "{not json"), ("calculator", '{"expression": "x"}')),
                               "sorry"])
    result = ToolCallingAgent(model, [calculator]).run("q")
    errors = [e.text for e in result.events if e.kind == "error"]
    assert "Valid tool names: calculator" in errors[0]
    assert "not valid JSON" in errors[1] and "not allowed" in errors[2]
    assert [m["content"] for m in model.calls[1]["messages"][-3:]] == errors
    assert result.answer == "sorry"


def test_max_iterations_and_wall_time_stop_honestly():
    loop = calls(("calculator", '{"expression": "1+1"}'))
    result = ToolCallingAgent(ScriptedChatModel([loop], repeat_last=True), [calculator], max_iterations=3).run("q")
    assert result.answer is None and result.stopped_reason == "stopped after 3 steps"
    slow = ScriptedChatModel(["a long answer that streams slowly"], repeat_last=True, delay_s=0.1)
    result = ToolCallingAgent(slow, [calculator], max_seconds=0.2).run("q")
    assert result.answer is None and result.stopped_reason.startswith("stopped: wall-time limit")


def test_empty_reply_is_an_error_not_an_answer_and_memory_records_the_turn():
    memory = BufferMemory()
    result = ToolCallingAgent(ScriptedChatModel(["", "fine"]), [calculator], memory=memory).run("q")
    assert [e.kind for e in result.events] == ["error", "answer"] and result.answer == "fine"
    assert memory.messages() == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "fine"}]


def test_through_the_openai_sdk_and_a_real_server():
    """The stub answers the first request with two parallel calls (streamed in fragments), then echoes."""
    with serve_stub(lambda messages, body: f"results: {[m['content'] for m in messages if m['role'] == 'tool']}") as (url, requests):
        model = load_chat_model(f"openai:{url}#stub-model", api_key="k")
        result = ToolCallingAgent(model, [calculator]).run("What is 17*23? And 2+2?")
    assert [e.text for e in result.events if e.kind == "tool_result"] == ["391", "4"]
    assert result.answer == "results: ['391', '4']"
    sent = requests[1]["body"]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "tool"]
    assert [m["tool_call_id"] for m in sent[-2:]] == ["call_0", "call_1"]
