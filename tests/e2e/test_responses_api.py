"""The OpenAI Responses API (/v1/responses) through the `openai` SDK's `client.responses` against a real server:
the same greedy reply as /v1/chat/completions for the same conversation, streamed events that build the same
response, a function-call round trip with function_call_output and previous_response_id, text.format as a
grammar, and hostile input as 400s in OpenAI's error shape."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

MODEL = "tiny"
TOOLS = [{"type": "function", "name": "get_weather", "description": "Current weather of a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10}}, "required": ["city"],
                         "additionalProperties": False}}]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_text_matches_chat_completions(client):
    ref = client.chat.completions.create(model=MODEL, max_tokens=8, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello world"}])
    r = client.responses.create(model=MODEL, instructions="Be brief.", input="hello world", max_output_tokens=8)
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.output_text == ref.choices[0].message.content
    assert r.usage.input_tokens == ref.usage.prompt_tokens
    assert r.usage.output_tokens == ref.usage.completion_tokens
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    finished = ref.choices[0].finish_reason
    assert r.status == ("incomplete" if finished == "length" else "completed")
    if finished == "length":
        assert r.incomplete_details.reason == "max_output_tokens"


def test_message_items_render_as_the_string_input(client):
    a = client.responses.create(model=MODEL, input="hello world", max_output_tokens=6)
    b = client.responses.create(model=MODEL, max_output_tokens=6, input=[
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello world"}]}])
    assert a.output_text == b.output_text and a.usage.input_tokens == b.usage.input_tokens


def test_stream_events_build_the_same_response(client):
    full = client.responses.create(model=MODEL, input="hello world", max_output_tokens=8)
    events = list(client.responses.create(model=MODEL, input="hello world", max_output_tokens=8, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == full.output_text
    last = events[-1].response
    assert last.output_text == full.output_text and last.usage.output_tokens == full.usage.output_tokens


def test_function_call_round_trip_with_previous_response_id(client, server):
    r = client.responses.create(model=MODEL, input="What is the weather in Paris?", tools=TOOLS,
                                tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=100)
    calls = [o for o in r.output if o.type == "function_call"]
    assert r.status == "completed" and calls and calls[0].name == "get_weather"
    assert calls[0].call_id and "city" in json.loads(calls[0].arguments)
    follow = client.responses.create(model=MODEL, previous_response_id=r.id, max_output_tokens=8, input=[
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21 C"}])
    assert follow.previous_response_id == r.id
    # the follow-up's prompt is the whole conversation: the same prompt sent as explicit items
    explicit = client.responses.create(model=MODEL, max_output_tokens=8, input=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather",
         "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21 C"}])
    alone = client.responses.create(model=MODEL, max_output_tokens=1, input="What is the weather in Paris?")
    assert follow.usage.input_tokens == explicit.usage.input_tokens > alone.usage.input_tokens
    assert follow.output_text == explicit.output_text
    assert client.responses.retrieve(r.id).id == r.id
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODEL, previous_response_id=r.id, input="again")


def test_streamed_function_call_through_the_stream_helper(client):
    with client.responses.stream(model=MODEL, input="Weather in Rome?", tools=TOOLS, tool_choice="required",
                                 parallel_tool_calls=False, max_output_tokens=100) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    call = next(o for o in final.output if o.type == "function_call")
    assert call.name == "get_weather" and "city" in json.loads(call.arguments)


def test_text_format_json_schema_is_enforced(client):
    schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 999}}, "required": ["n"],
              "additionalProperties": False}
    r = client.responses.create(model=MODEL, input="a number", max_output_tokens=40, text={
        "format": {"type": "json_schema", "name": "num", "schema": schema, "strict": True}})
    assert r.status == "completed" and isinstance(json.loads(r.output_text)["n"], int)


def test_store_false_keeps_nothing(client):
    r = client.responses.create(model=MODEL, input="hello", max_output_tokens=2, store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)


@pytest.mark.parametrize("body, words", [
    ({"model": MODEL, "input": 7}, "input"),
    ({"model": MODEL, "input": []}, "input is empty"),
    ({"model": MODEL, "input": [{"type": "computer_call"}]}, "item type 'computer_call' is not supported"),
    ({"model": MODEL, "input": [{"role": "wizard", "content": "x"}]}, "role must be"),
    ({"model": MODEL, "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
     "'input_image' is not supported"),
    ({"model": MODEL, "input": "x", "tools": [{"type": "web_search"}]}, "'web_search' is not supported"),
    ({"model": MODEL, "input": "x", "tool_choice": "required"}, "needs tools"),
    ({"model": MODEL, "input": "x", "text": {"format": {"type": "yaml"}}}, "text.format"),
    ({"model": MODEL, "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": MODEL, "input": [{"type": "function_call_output", "output": "x"}]}, "call_id"),
])
def test_hostile_input_is_a_400_in_openai_shape(server, body, words):
    r = httpx.post(f"{server.url}/v1/responses", json=body, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert words in err["message"] and err["type"] == "invalid_request_error"


def test_unknown_model_and_previous_id_are_404s(server):
    r = httpx.post(f"{server.url}/v1/responses", json={"model": "no-such", "input": "x"}, timeout=60)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(f"{server.url}/v1/responses", json={"model": MODEL, "input": "x",
                                                       "previous_response_id": "resp_nope"}, timeout=60)
    assert r.status_code == 404 and "resp_nope" in r.json()["error"]["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_the_call_is_traced_with_the_response_usage(client, server, stream):
    raw = client.responses.with_raw_response.create(model=MODEL, input="hello world", max_output_tokens=4,
                                                    stream=stream)
    trace_id = raw.headers["x-trace-id"]
    parsed = raw.parse()
    response = list(parsed)[-1].response if stream else parsed
    tracing = server.app.state.tracing
    tracing.flush()
    spans = [s for s in tracing.store.get(trace_id)["spans"] if s["kind"] == "llm"]
    assert len(spans) == 1 and spans[0]["name"] == f"chat {MODEL}"
    attrs = spans[0]["attributes"]
    assert attrs["gen_ai.usage.input_tokens"] == response.usage.input_tokens
    assert attrs["gen_ai.usage.output_tokens"] == response.usage.output_tokens
    assert attrs["gen_ai.response.id"] == response.id
