"""The official `openai` SDK (sync and async) against a real athanor server: answers, streams, logprobs, n, stop,
limits, errors. smollm2 where the answer matters (greedy "Paris"), the tiny model for protocol shapes."""

from __future__ import annotations

import asyncio
import math

import httpx
import openai
import pytest

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_chat_answers_paris_greedy(client):
    r = client.chat.completions.create(model="smollm2", messages=QUESTION, temperature=0, max_tokens=20)
    choice = r.choices[0]
    assert "Paris" in choice.message.content
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert r.object == "chat.completion" and r.model == "smollm2" and r.id.startswith("chatcmpl-")
    assert r.usage.prompt_tokens > 5 and 0 < r.usage.completion_tokens <= 20
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_stream_equals_non_stream_with_usage(client):
    kw = {"model": "smollm2", "messages": QUESTION, "temperature": 0, "max_tokens": 20}
    full = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [full.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_logprobs_shapes_and_values(client):
    r = client.chat.completions.create(model="smollm2", messages=QUESTION, temperature=0, max_tokens=6,
                                       logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].token == entry.token  # greedy: the chosen token is the most likely
        assert math.isclose(entry.top_logprobs[0].logprob, entry.logprob, abs_tol=1e-4)
        assert sum(math.exp(t.logprob) for t in entry.top_logprobs) <= 1 + 1e-4
        assert bytes(entry.bytes).decode() == entry.token
    assert "".join(e.token for e in content) == r.choices[0].message.content
    stream = client.chat.completions.create(model="smollm2", messages=QUESTION, temperature=0, max_tokens=6,
                                            logprobs=True, top_logprobs=3, stream=True)
    streamed = [e for c in stream if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [(e.token, round(e.logprob, 4)) for e in streamed] == [(e.token, round(e.logprob, 4)) for e in content]


def test_n_choices_stop_and_length(client):
    r = client.chat.completions.create(model="tiny", messages=QUESTION, n=3, temperature=1.0, seed=7, max_tokens=5,
                                       extra_body={"ignore_eos": True})
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.finish_reason == "length" for c in r.choices) and r.usage.completion_tokens == 15
    stream = client.chat.completions.create(model="tiny", messages=QUESTION, n=2, max_tokens=4, stream=True,
                                            extra_body={"ignore_eos": True})
    finishes = {c.choices[0].index: c.choices[0].finish_reason for c in stream if c.choices[0].finish_reason}
    assert finishes == {0: "length", 1: "length"}
    stopped = client.chat.completions.create(model="smollm2", messages=QUESTION, temperature=0, max_tokens=20,
                                             stop=["Paris"])
    assert "Paris" not in stopped.choices[0].message.content and stopped.choices[0].finish_reason == "stop"


def test_completions_endpoint_with_logprobs(client):
    r = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=4, temperature=0,
                                  logprobs=2)
    lp = r.choices[0].logprobs
    assert r.object == "text_completion" and len(lp.tokens) == r.usage.completion_tokens == len(lp.token_logprobs)
    assert "".join(lp.tokens) == r.choices[0].text and all(len(t) == 2 for t in lp.top_logprobs)
    many = client.completions.create(model="tiny", prompt=["hello", "world"], n=2, max_tokens=2,
                                     extra_body={"ignore_eos": True})
    assert sorted(c.index for c in many.choices) == [0, 1, 2, 3]


def test_errors_in_openai_shape(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=QUESTION)
    assert e.value.body["code"] == "model_not_found"
    for bad in ({"temperature": 5}, {"top_logprobs": 3}, {"n": 0}, {"extra_body": {"top_k": -5}},
                {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},  # not a type-object schema
                {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                 "tool_choice": {"type": "function", "function": {"name": "g"}}},  # names no offered tool
                {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}}):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=2, **bad)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello " * 2000}])
    assert e.value.body["code"] == "context_length_exceeded"


def test_seeded_choices_differ_but_repeat(client):
    kw = {"model": "tiny", "messages": QUESTION, "n": 3, "temperature": 1.0, "seed": 11, "max_tokens": 6,
          "extra_body": {"ignore_eos": True}}
    first = [c.message.content for c in client.chat.completions.create(**kw).choices]
    again = [c.message.content for c in client.chat.completions.create(**kw).choices]
    assert first == again and len(set(first)) > 1


def test_out_of_vocab_ids_are_400_not_engine_failures(client):
    with pytest.raises(openai.BadRequestError, match="vocabulary"):
        client.completions.create(model="tiny", prompt=[1, 2, 10**6], max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="vocab"):
        client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=2, logit_bias={"999999": 5})
    assert client.completions.create(model="tiny", prompt=[1, 2, 3], max_tokens=2).choices[0].finish_reason


def test_models_list_tokenize_detokenize(client, server):
    assert {"smollm2", "tiny"} <= {m.id for m in client.models.list()}
    tok = httpx.post(f"{server.url}/tokenize", json={"model": "smollm2", "prompt": "The capital of France"}).json()
    assert tok["count"] == len(tok["tokens"]) > 0 and tok["max_model_len"] > 0
    back = httpx.post(f"{server.url}/detokenize", json={"model": "smollm2", "tokens": tok["tokens"]}).json()
    assert back["prompt"] == "The capital of France"
    chat = httpx.post(f"{server.url}/tokenize", json={"model": "smollm2", "messages": QUESTION}).json()
    assert chat["count"] > tok["count"]  # the chat template adds the role markers
    bad = httpx.post(f"{server.url}/detokenize", json={"model": "smollm2", "tokens": [10**9]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"


def test_async_client_concurrent_streams_equal_alone(server):
    """64 concurrent greedy streams (4 prompts x 16) equal each prompt sent alone; then no KV block is held."""
    questions = ["What is the capital of France?", "Name a color.", "What is 2+2?", "Say hello."]
    aclient = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)

    async def ask(q: str, stream: bool) -> str:
        kw = {"model": "smollm2", "messages": [{"role": "user", "content": q}], "temperature": 0, "max_tokens": 12}
        if not stream:
            return (await aclient.chat.completions.create(**kw)).choices[0].message.content
        return "".join([c.choices[0].delta.content or "" async for c in await aclient.chat.completions.create(
            **kw, stream=True)])

    async def main():
        alone = [await ask(q, stream=False) for q in questions]
        together = await asyncio.gather(*(ask(q, stream=True) for q in questions * 16))
        await aclient.close()
        return alone, together

    alone, together = asyncio.run(main())
    assert together == alone * 16
    assert server.metric("athanor_kv_blocks_in_use") == 0 and server.manager.kv_blocks_in_use() == 0
    assert server.metric("athanor_running_sequences") == 0
