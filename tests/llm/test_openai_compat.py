"""openai_compat against a real OpenAI-shaped server on 127.0.0.1, driven by the real `openai` SDK."""

from __future__ import annotations

import json

import pytest

from athanor.llm.base import ChatModel, ToolCall, collect, load_chat_model, tool_call_message
from athanor.llm.openai_compat import OpenAIChatModel
from tests.llm.openai_stub import serve_stub

pytest.importorskip("openai")


def echo(messages, body):
    return "echo: " + messages[-1]["content"]


@pytest.fixture(scope="module")
def stub():
    with serve_stub(echo) as (url, requests):
        yield url, requests


@pytest.fixture()
def model(stub, monkeypatch):
    url, requests = stub
    requests.clear()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")
    return load_chat_model(f"openai:{url}#stub-model"), requests


def test_spec_gives_an_openai_model_implementing_the_protocol(model):
    m, _ = model
    assert isinstance(m, OpenAIChatModel) and isinstance(m, ChatModel)
    assert m.name == "stub-model"


def test_chat_returns_text_usage_and_sends_the_key(model):
    m, requests = model
    r = m.chat([{"role": "user", "content": "hello there"}], temperature=0.2, max_tokens=7)
    assert (r.text, r.finish_reason, r.tool_calls) == ("echo: hello there", "stop", [])
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (11, 3)
    assert requests[0]["authorization"] == "Bearer sk-test-key"
    body = requests[0]["body"]
    assert body["temperature"] == 0.2 and body["max_tokens"] == 7 and body["model"] == "stub-model"


def test_ollama_and_extension_options_are_mapped(model):
    m, requests = model
    m.chat([{"role": "user", "content": "x"}], num_predict=5, top_k=3, stop=["\n"], seed=None)
    body = requests[0]["body"]
    assert body["max_tokens"] == 5 and body["top_k"] == 3 and body["stop"] == ["\n"]
    assert "seed" not in body and "num_predict" not in body


def test_stream_yields_text_then_finish_and_usage(model):
    m, requests = model
    deltas = list(m.stream([{"role": "user", "content": "streaming works"}]))
    assert "".join(d.text for d in deltas) == "echo: streaming works"
    assert len([d for d in deltas if d.text]) > 1
    assert deltas[-1].finish_reason == "stop" and deltas[-1].usage.prompt_tokens == 11
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert requests[0]["body"]["stream_options"] == {"include_usage": True}
    assert collect(iter(deltas)).text == "echo: streaming works"


TOOLS = [{"type": "function", "function": {"name": "calculator", "description": "math",
                                           "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}}}}]


def test_parallel_tool_calls_complete_and_streamed(model):
    m, requests = model
    msgs = [{"role": "user", "content": "What is 17*23 and 2+2?"}]
    expected = [ToolCall("call_0", "calculator", '{"expression": "17*23"}'),
                ToolCall("call_1", "calculator", '{"expression": "2+2"}')]
    r = m.chat(msgs, tools=TOOLS)
    assert r.tool_calls == expected and r.finish_reason == "tool_calls" and r.text == ""
    deltas = list(m.stream(msgs, tools=TOOLS))
    streamed = collect(iter(deltas))
    assert streamed.tool_calls == expected and streamed.finish_reason == "tool_calls"
    # each call is delivered once whole: the first as soon as the second begins, the last with the finish
    with_calls = [d for d in deltas if d.tool_calls]
    assert [d.tool_calls for d in with_calls] == [[expected[0]], [expected[1]]]
    assert with_calls[0].finish_reason is None and with_calls[1].finish_reason == "tool_calls"
    assert requests[0]["body"]["tools"] == TOOLS
    # the follow-up request with tool results goes through in OpenAI's message shape
    follow = msgs + [tool_call_message("", r.tool_calls)] + [
        {"role": "tool", "tool_call_id": c.id, "content": json.loads(c.arguments)["expression"]} for c in r.tool_calls]
    final = m.chat(follow, tools=TOOLS)
    assert final.tool_calls == [] and final.text.startswith("echo:")
    assert requests[-1]["body"]["messages"][1]["tool_calls"][0]["function"]["name"] == "calculator"


def test_model_name_defaults_to_the_first_served_model(stub):
    url, _ = stub
    m = load_chat_model(f"openai:{url}", api_key="k")
    assert m.name == "stub-model"
    assert m.chat([{"role": "user", "content": "hi"}]).text == "echo: hi"


def test_embed(model):
    m, _ = model
    assert m.embed(["ab", "abcd"]) == [[2.0, 1.0], [4.0, 1.0]]


@pytest.mark.parametrize("spec", ["", "  ", "openai:127.0.0.1:8000/v1", "openai:"])
def test_bad_specs_are_value_errors(spec):
    with pytest.raises(ValueError):
        load_chat_model(spec)


def test_unreachable_server_raises_the_sdk_error():
    import openai

    m = load_chat_model("openai:http://127.0.0.1:9/v1#x", max_retries=0, timeout=5)
    with pytest.raises(openai.APIConnectionError):
        m.chat([{"role": "user", "content": "hi"}])
