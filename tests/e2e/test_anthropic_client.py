"""The Anthropic Messages API (/v1/messages) through Anthropic's own `anthropic` SDK against a real server: the
same greedy reply as /v1/chat/completions for the same conversation, streamed and not, stop reasons, usage, and
errors in Anthropic's shape."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

MODEL = "tiny"
SYSTEM = "Be brief."
MESSAGES = [{"role": "user", "content": "hello world"}]


@pytest.fixture(scope="module")
def client(server):
    return anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0, timeout=60)


def _chat_completion(server, max_tokens):
    c = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)
    return c.chat.completions.create(model=MODEL, max_tokens=max_tokens,
                                     messages=[{"role": "system", "content": SYSTEM}, *MESSAGES])


def test_message_matches_chat_completions(client, server):
    ref = _chat_completion(server, 8)
    msg = client.messages.create(model=MODEL, max_tokens=8, system=SYSTEM, messages=MESSAGES)
    assert msg.type == "message" and msg.role == "assistant" and msg.id.startswith("msg_")
    text = "".join(b.text for b in msg.content if b.type == "text")
    assert text == ref.choices[0].message.content
    assert msg.usage.input_tokens == ref.usage.prompt_tokens and msg.usage.output_tokens == ref.usage.completion_tokens
    want = {"length": "max_tokens", "stop": "end_turn"}[ref.choices[0].finish_reason]
    assert msg.stop_reason == want


def test_system_as_blocks_and_content_blocks_render_the_same(client):
    a = client.messages.create(model=MODEL, max_tokens=6, system=SYSTEM, messages=MESSAGES)
    b = client.messages.create(model=MODEL, max_tokens=6, system=[{"type": "text", "text": SYSTEM}],
                               messages=[{"role": "user", "content": [{"type": "text", "text": "hello world"}]}])
    assert a.content == b.content and a.usage.input_tokens == b.usage.input_tokens


def test_stream_events_build_the_same_message(client):
    full = client.messages.create(model=MODEL, max_tokens=8, system=SYSTEM, messages=MESSAGES)
    with client.messages.stream(model=MODEL, max_tokens=8, system=SYSTEM, messages=MESSAGES) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop" and "content_block_delta" in events
    assert [(b.type, b.text) for b in final.content] == [(b.type, b.text) for b in full.content]
    assert final.stop_reason == full.stop_reason
    assert final.usage.output_tokens == full.usage.output_tokens


def test_errors_in_anthropic_shape(client, server):
    with pytest.raises(anthropic.NotFoundError) as e:
        client.messages.create(model="no-such-model", max_tokens=4, messages=MESSAGES)
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model=MODEL, max_tokens=4, messages=[
            {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "http://x/y.png"}}]}])
    assert "content block type 'image' is not supported" in e.value.body["error"]["message"]
    raw = httpx.post(f"{server.url}/v1/messages", json={"model": MODEL, "messages": MESSAGES})  # no max_tokens
    assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in raw.json()["error"]["message"]
