"""`echo` with `stream` on /v1/completions through the `openai` SDK: the prompt comes first (as vLLM streams it),
with the prompt's logprobs when asked, and the joined stream equals the non-streamed echo answer."""

from __future__ import annotations

import openai
import pytest

MODEL = "tiny"


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def _joined(chunks) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for c in chunks:
        for ch in c.choices:
            o = out.setdefault(ch.index, {"text": "", "tokens": [], "token_logprobs": [], "finish": None})
            o["text"] += ch.text
            if ch.logprobs:
                o["tokens"] += ch.logprobs.tokens
                o["token_logprobs"] += ch.logprobs.token_logprobs
            o["finish"] = ch.finish_reason or o["finish"]
    return out


@pytest.mark.parametrize("logprobs", [None, 2])
def test_streamed_echo_equals_the_full_answer(client, logprobs):
    kw = {"model": MODEL, "prompt": ["hello world", "how are you"], "max_tokens": 5, "echo": True,
          "logprobs": logprobs, "n": 2, "seed": 3, "temperature": 0.8}
    full = client.completions.create(**kw)
    chunks = list(client.completions.create(stream=True, **kw))
    first = {}
    for c in chunks:
        for ch in c.choices:
            first.setdefault(ch.index, ch.text)
    joined = _joined(chunks)
    assert sorted(joined) == [0, 1, 2, 3]
    for choice in full.choices:
        got = joined[choice.index]
        prompt = "hello world" if choice.index < 2 else "how are you"
        assert first[choice.index].endswith(prompt)  # the first chunk of a choice is its prompt, nothing more
        assert got["text"] == choice.text and got["text"].startswith(first[choice.index])
        assert got["finish"] == choice.finish_reason
        if logprobs is None:
            assert not got["tokens"]
            continue
        assert got["tokens"] == choice.logprobs.tokens
        assert got["token_logprobs"][0] is None
        assert got["token_logprobs"][1:] == pytest.approx(choice.logprobs.token_logprobs[1:], abs=1e-4)


def test_streamed_echo_with_usage(client):
    chunks = list(client.completions.create(model=MODEL, prompt="hello world", max_tokens=3, echo=True, stream=True,
                                            stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens == 3 and chunks[0].choices[0].text.endswith("hello world")
