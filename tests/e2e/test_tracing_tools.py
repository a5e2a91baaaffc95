"""A traced reply that calls a tool keeps its calls as the API returned them: OpenAI's `tool_calls` (arguments as
JSON text) on /v1/chat/completions, Ollama's (arguments as an object) on /api/chat streamed (NDJSON read
as is). The model is the tiny
Qwen2 taught by athanor's own trainer to call get_weather (test_openai_tools.py's fixture)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from athanor import tracing
from athanor.models.store import Store
from athanor.ops.tracing_setup import TraceSettings
from athanor.serve.app import create_app
from tests.e2e.conftest import small_engine_config, start_server
from tests.e2e.test_openai_tools import MODEL, QUESTION, TOOLS, tool_model_home  # noqa: F401 - the fixture


@pytest.fixture(scope="module")
def traced_tools(tool_model_home, tmp_path_factory):  # noqa: F811
    app = create_app(store=Store(tool_model_home), engine_config=small_engine_config(),
                     trace=TraceSettings(path=tmp_path_factory.mktemp("tool_traces") / "traces.sqlite"))
    with start_server(app) as s:
        yield s


def output_of(server, trace_id: str):
    trace = httpx.get(f"{server.url}/v1/traces/{trace_id}", timeout=30).json()
    span = next(s for s in trace["spans"] if s["kind"] == "llm")
    return span, json.loads(span["attributes"][tracing.OUTPUT_MESSAGES])


def test_openai_tool_calls_are_in_the_trace(traced_tools):
    client = openai.OpenAI(base_url=f"{traced_tools.url}/v1", api_key="none", max_retries=0, timeout=120)
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=QUESTION, tools=TOOLS,
                                                           max_tokens=80)
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls"
    span, output = output_of(traced_tools, raw.headers["x-trace-id"])
    assert output[0]["tool_calls"] == [c.model_dump() for c in choice.message.tool_calls]
    assert span["attributes"][tracing.FINISH_REASONS] == ["tool_calls"]


def test_ollama_streamed_tool_calls_are_in_the_trace(traced_tools):
    # raw NDJSON: the `ollama` client rewrites tool schemas (the tiny model only learned the OpenAI-shaped prompt)
    body = {"model": MODEL, "messages": QUESTION, "tools": TOOLS, "options": {"num_predict": 80}}
    r = httpx.post(f"{traced_tools.url}/api/chat", json=body, timeout=120)
    parts = [json.loads(line) for line in r.text.splitlines()]
    calls = [c for p in parts for c in p["message"].get("tool_calls", [])]
    assert calls and calls[0]["function"]["arguments"] == {"city": "Paris"}
    assert parts[-1]["done"] and parts[-1]["trace_id"] == r.headers["x-trace-id"]
    span, output = output_of(traced_tools, parts[-1]["trace_id"])
    assert output["role"] == "assistant" and output["tool_calls"] == calls
    assert (span["attributes"][tracing.INPUT_TOKENS], span["attributes"][tracing.OUTPUT_TOKENS]) == (
        parts[-1]["prompt_eval_count"], parts[-1]["eval_count"])
