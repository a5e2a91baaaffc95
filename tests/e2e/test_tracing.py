"""Traces through a real `athanor serve` (uvicorn on 127.0.0.1) driven by the real `openai`, `ollama` and
`anthropic` clients: every generating route records a model span whose tokens equal what the client was told
(usage / prompt_eval_count / eval_count), the trace id comes back in X-Trace-Id and the final streamed chunk,
a client's traceparent is continued, feedback lands with the trace, and the ops routes refuse bad input."""

from __future__ import annotations

import json
import os
import time

import anthropic
import httpx
import ollama
import openai
import pytest

from athanor import tracing
from athanor.ops.tracing_setup import TraceSettings
from athanor.serve.app import create_app
from tests.e2e.conftest import make_store, small_engine_config, start_server

HELLO = [{"role": "user", "content": "Say hello to the trace store."}]


@pytest.fixture(scope="module")
def traced(tmp_path_factory, tiny_hf_dir):
    home = tmp_path_factory.mktemp("traced_home")
    app = create_app(store=make_store(home, tiny_hf_dir), engine_config=small_engine_config(),
                     trace=TraceSettings(path=home / "traces.sqlite"))
    with start_server(app) as s:
        s.home = home
        yield s


@pytest.fixture(scope="module")
def oai(traced):
    return openai.OpenAI(base_url=f"{traced.url}/v1", api_key="none", max_retries=0)


def get_trace(server, trace_id: str) -> dict:
    r = httpx.get(f"{server.url}/v1/traces/{trace_id}", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def model_span(trace: dict) -> dict:
    spans = [s for s in trace["spans"] if s["kind"] in ("llm", "embedding")]
    assert len(spans) == 1, [s["name"] for s in trace["spans"]]
    return spans[0]


def tokens(span: dict) -> tuple[int | None, int | None]:
    a = span["attributes"]
    return a.get(tracing.INPUT_TOKENS), a.get(tracing.OUTPUT_TOKENS)


def newest_trace_id(server) -> str:
    return httpx.get(f"{server.url}/v1/traces", params={"limit": 1}, timeout=30).json()["data"][0]["trace_id"]


# --- OpenAI routes ---------------------------------------------------------------------------------------------

def test_chat_tokens_equal_usage_and_content_is_kept(traced, oai):
    raw = oai.chat.completions.with_raw_response.create(model="tiny", messages=HELLO, max_tokens=8, temperature=0)
    reply = raw.parse()
    trace = get_trace(traced, raw.headers["x-trace-id"])
    span = model_span(trace)
    assert tokens(span) == (reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert (trace["input_tokens"], trace["output_tokens"]) == tokens(span) and trace["model"] == "tiny"
    a = span["attributes"]
    assert a[tracing.OPERATION] == "chat" and a[tracing.MAX_TOKENS] == 8 and a[tracing.RESPONSE_ID] == reply.id
    assert a[tracing.FINISH_REASONS] == [reply.choices[0].finish_reason]
    assert json.loads(a[tracing.INPUT_MESSAGES]) == HELLO
    assert json.loads(a[tracing.OUTPUT_MESSAGES])[0]["content"] == reply.choices[0].message.content
    assert a[tracing.TTFT] >= 0 and span["status"] == "ok" and trace["status"] == "ok"
    root = next(s for s in trace["spans"] if s["kind"] == "http")
    assert span["parent_id"] == root["span_id"] and root["name"] == "POST /v1/chat/completions"


def test_chat_stream_with_usage_carries_trace_id_in_last_chunk(traced, oai):
    chunks = list(oai.chat.completions.create(model="tiny", messages=HELLO, max_tokens=8, stream=True,
                                              stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.usage is not None and not last.choices
    trace_id = last.model_extra["trace_id"]
    assert all("trace_id" not in (c.model_extra or {}) for c in chunks[:-1])
    span = model_span(get_trace(traced, trace_id))
    assert tokens(span) == (last.usage.prompt_tokens, last.usage.completion_tokens)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(span["attributes"][tracing.OUTPUT_MESSAGES])[0]["content"] == text


def test_stream_without_usage_puts_trace_id_on_last_finish_chunk(traced, oai):
    with oai.completions.with_streaming_response.create(model="tiny", prompt="Once upon", max_tokens=6, n=2,
                                                        stream=True, temperature=1.0, seed=3) as resp:
        header = resp.headers["x-trace-id"]
        chunks = list(resp.parse())
    marked = [i for i, c in enumerate(chunks) if "trace_id" in (c.model_extra or {})]
    assert marked == [len(chunks) - 1] and chunks[-1].model_extra["trace_id"] == header
    assert chunks[-1].choices[0].finish_reason is not None
    span = model_span(get_trace(traced, header))
    assert span["attributes"][tracing.OPERATION] == "text_completion"
    streamed = ["".join(ch.text for c in chunks for ch in c.choices if ch.index == i) for i in (0, 1)]
    assert json.loads(span["attributes"][tracing.OUTPUT_MESSAGES]) == streamed
    assert span["attributes"][tracing.FINISH_REASONS] and tokens(span)[1] > 0


def test_completions_tokens_equal_usage(traced, oai):
    raw = oai.completions.with_raw_response.create(model="tiny", prompt=["One two", "three four five"],
                                                   max_tokens=5, temperature=0)
    reply = raw.parse()
    span = model_span(get_trace(traced, raw.headers["x-trace-id"]))
    assert tokens(span) == (reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert json.loads(span["attributes"][tracing.INPUT_MESSAGES]) == ["One two", "three four five"]


def test_embeddings_are_traced_with_their_token_count(traced, oai):
    raw = oai.embeddings.with_raw_response.create(model="tiny", input=["alpha beta", "gamma"])
    reply = raw.parse()
    trace = get_trace(traced, raw.headers["x-trace-id"])
    span = model_span(trace)
    assert span["kind"] == "embedding" and span["attributes"][tracing.OPERATION] == "embeddings"
    assert tokens(span) == (reply.usage.prompt_tokens, None) and trace["model"] == "tiny"
    assert trace["input_tokens"] == reply.usage.prompt_tokens


def test_traceparent_is_continued(traced, oai):
    trace_id, parent = os.urandom(16).hex(), os.urandom(8).hex()
    raw = oai.chat.completions.with_raw_response.create(
        model="tiny", messages=HELLO, max_tokens=3, extra_headers={"traceparent": f"00-{trace_id}-{parent}-01"})
    assert raw.headers["x-trace-id"] == trace_id
    trace = get_trace(traced, trace_id)
    root = next(s for s in trace["spans"] if s["kind"] == "http")
    assert root["parent_id"] == parent and trace["root_span_id"] == root["span_id"]
    assert model_span(trace)["parent_id"] == root["span_id"]


def test_engine_refusal_fails_the_span(traced, oai):
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.with_raw_response.create(model="tiny", max_tokens=4,
                                                      messages=[{"role": "user", "content": "word " * 3000}])
    trace = get_trace(traced, err.value.response.headers["x-trace-id"])
    assert trace["status"] == "error" and model_span(trace)["status"] == "error"
    assert httpx.get(f"{traced.url}/v1/traces", params={"errors": "true"}).json()["data"][0]["trace_id"] == \
        trace["trace_id"]


# --- Ollama and Anthropic routes -------------------------------------------------------------------------------

def test_ollama_chat_and_generate_tokens_equal_counts(traced):
    client = ollama.Client(host=traced.url, timeout=60)
    options = {"temperature": 0, "num_predict": 6}
    for call in (lambda **kw: client.chat(model="tiny", messages=HELLO, options=options, **kw),
                 lambda **kw: client.generate(model="tiny", prompt="Tell a story", options=options, **kw)):
        full = call()
        span = model_span(get_trace(traced, newest_trace_id(traced)))
        assert tokens(span) == (full.prompt_eval_count, full.eval_count)
        assert span["attributes"][tracing.MAX_TOKENS] == 6 and span["attributes"][tracing.FINISH_REASONS] == [
            full.done_reason]
        parts = list(call(stream=True))
        span = model_span(get_trace(traced, newest_trace_id(traced)))
        assert tokens(span) == (parts[-1].prompt_eval_count, parts[-1].eval_count) and parts[-1].done
    # generate: the text as the client put it together (a string is stored as is)
    assert span["attributes"][tracing.OUTPUT_MESSAGES] == "".join(p.response for p in parts)


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_final_object_carries_trace_id(traced, stream):
    body = {"model": "tiny", "messages": HELLO, "stream": stream, "options": {"num_predict": 4}}
    r = httpx.post(f"{traced.url}/api/chat", json=body, timeout=60)
    final = json.loads(r.text.strip().splitlines()[-1])
    assert final["done"] and final["trace_id"] == r.headers["x-trace-id"]
    assert all("trace_id" not in json.loads(line) for line in r.text.strip().splitlines()[:-1])
    span = model_span(get_trace(traced, final["trace_id"]))
    assert tokens(span) == (final["prompt_eval_count"], final["eval_count"])
    assert json.loads(span["attributes"][tracing.OUTPUT_MESSAGES])["role"] == "assistant"


def test_ollama_embed_is_traced(traced):
    client = ollama.Client(host=traced.url, timeout=60)
    r = client.embed(model="tiny", input=["one", "two three"])
    span = model_span(get_trace(traced, newest_trace_id(traced)))
    assert span["kind"] == "embedding" and tokens(span) == (r.prompt_eval_count, None)


def test_anthropic_messages_tokens_equal_usage(traced):
    client = anthropic.Anthropic(base_url=traced.url, api_key="none", max_retries=0)
    msg = client.messages.create(model="tiny", max_tokens=6, messages=HELLO)
    span = model_span(get_trace(traced, newest_trace_id(traced)))
    assert tokens(span) == (msg.usage.input_tokens, msg.usage.output_tokens)
    assert span["attributes"][tracing.FINISH_REASONS] == [msg.stop_reason]
    with client.messages.stream(model="tiny", max_tokens=6, messages=HELLO) as stream:
        final = stream.get_final_message()
    span = model_span(get_trace(traced, newest_trace_id(traced)))
    assert tokens(span) == (final.usage.input_tokens, final.usage.output_tokens)
    assert json.loads(span["attributes"][tracing.OUTPUT_MESSAGES])["content"] == [
        b.model_dump(exclude_none=True) for b in final.content]


def test_client_gone_mid_stream_fails_the_span(traced):
    body = {"model": "tiny", "prompt": "x", "raw": True, "options": {"num_predict": 480, "stop": ["\u2603"]}}
    with httpx.stream("POST", f"{traced.url}/api/generate", json=body, timeout=60) as r:
        trace_id = r.headers["x-trace-id"]
        next(r.iter_lines())
    deadline = time.monotonic() + 30
    while True:
        trace = httpx.get(f"{traced.url}/v1/traces/{trace_id}").json()
        if "spans" in trace and any(s["kind"] == "http" for s in trace["spans"]):
            break
        assert time.monotonic() < deadline, "the trace never ended"
        time.sleep(0.05)
    span = model_span(trace)
    assert span["status"] == "error" and span["attributes"]["athanor.aborted"] is True
    assert tokens(span)[1] < 480


# --- the ops routes ----------------------------------------------------------------------------------------------

def test_feedback_over_http_and_cli_shows_in_list(traced, oai, monkeypatch):
    from typer.testing import CliRunner

    from athanor.cli import app

    good = oai.chat.completions.with_raw_response.create(model="tiny", messages=HELLO, max_tokens=2)
    good_id = good.headers["x-trace-id"]
    r = httpx.post(f"{traced.url}/v1/feedback", json={"trace_id": good_id, "score": "good", "comment": "nice"})
    assert r.status_code == 200 and r.json()["score"] == 1.0 and r.json()["trace_id"] == good_id
    bad_id = oai.chat.completions.with_raw_response.create(model="tiny", messages=HELLO,
                                                           max_tokens=2).headers["x-trace-id"]
    get_trace(traced, bad_id)  # the CLI reads the file as is: let the server's writer flush first (as any read does)
    monkeypatch.setenv("ATHANOR_HOME", str(traced.home))
    runner = CliRunner()
    out = runner.invoke(app, ["feedback", bad_id[:10], "--bad", "--correction", "Hello, trace store!"])
    assert out.exit_code == 0, out.output
    listed = runner.invoke(app, ["traces", "list", "--feedback", "good", "--json"])
    assert listed.exit_code == 0, listed.output
    ids = [json.loads(line)["trace_id"] for line in listed.output.splitlines()]
    assert good_id in ids and bad_id not in ids
    http_bad = httpx.get(f"{traced.url}/v1/traces", params={"feedback": "bad"}).json()["data"]
    assert bad_id in [t["trace_id"] for t in http_bad] and good_id not in [t["trace_id"] for t in http_bad]
    trace = get_trace(traced, bad_id)
    assert trace["feedback"][-1]["correction"] == "Hello, trace store!" and trace["feedback"][-1]["source"] == "cli"
    table = runner.invoke(app, ["traces", "list", "--feedback", "good", "--model", "tiny"])
    assert good_id[:12] in table.output and "good" in table.output
    shown = runner.invoke(app, ["traces", "show", bad_id[:12]])
    assert shown.exit_code == 0 and "POST /v1/chat/completions [http]" in shown.output
    assert "chat tiny [llm]" in shown.output and "feedback bad" in shown.output


@pytest.mark.parametrize("method,path,payload,status", [
    ("POST", "/v1/feedback", {"trace_id": "0" * 32, "score": 1}, 404),
    ("POST", "/v1/feedback", {"trace_id": "TRACE", "score": 2}, 400),
    ("POST", "/v1/feedback", {"trace_id": "TRACE", "score": "meh"}, 400),
    ("POST", "/v1/feedback", {"trace_id": "TRACE", "score": True}, 400),
    ("POST", "/v1/feedback", {"trace_id": "TRACE"}, 400),
    ("POST", "/v1/feedback", {"trace_id": "TRACE", "score": 1, "comment": ["x"]}, 400),
    ("POST", "/v1/feedback", [1, 2], 400),
    ("POST", "/v1/feedback", {"trace_id": 7, "score": 1}, 400),
    ("GET", "/v1/traces?limit=100000000", None, 400),
    ("GET", "/v1/traces?limit=-1", None, 400),
    ("GET", "/v1/traces?offset=-5", None, 400),
    ("GET", "/v1/traces?since=yesterday", None, 400),
    ("GET", "/v1/traces?since=-1h", None, 400),
    ("GET", "/v1/traces?since=1e400", None, 400),
    ("GET", "/v1/traces?feedback=great", None, 400),
    ("GET", "/v1/traces?errors=maybe", None, 400),
    ("GET", "/v1/traces/" + "f" * 32, None, 404),
])
def test_hostile_ops_input_is_a_4xx(traced, oai, method, path, payload, status):
    trace_id = oai.chat.completions.with_raw_response.create(model="tiny", messages=HELLO,
                                                             max_tokens=1).headers["x-trace-id"]
    if isinstance(payload, dict) and payload.get("trace_id") == "TRACE":
        payload = payload | {"trace_id": trace_id}
    before = httpx.get(f"{traced.url}/v1/traces", params={"limit": 1000}).json()["data"]
    r = httpx.request(method, f"{traced.url}{path}", json=payload, timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert isinstance(err["message"], str) and "\n" not in err["message"] and err["type"]
    after = httpx.get(f"{traced.url}/v1/traces", params={"limit": 1000}).json()["data"]
    assert after == before  # nothing stored, and the ops routes themselves are not traced


def test_since_filters_by_age(traced, oai):
    oai.chat.completions.create(model="tiny", messages=HELLO, max_tokens=1)
    recent = httpx.get(f"{traced.url}/v1/traces", params={"since": "1h"}).json()["data"]
    assert recent and all(t["start"] >= time.time() - 3600 for t in recent)
    assert httpx.get(f"{traced.url}/v1/traces", params={"since": "0"}).json()["data"] == []


# --- settings: no content, retention, tracing off ----------------------------------------------------------------

def test_no_trace_content_keeps_tokens_and_retention_prunes(tmp_path, tiny_hf_dir):
    settings = TraceSettings(path=tmp_path / "traces.sqlite", content=False, retention=2)
    app = create_app(store=make_store(tmp_path, tiny_hf_dir), engine_config=small_engine_config(), trace=settings)
    with start_server(app) as s:
        client = openai.OpenAI(base_url=f"{s.url}/v1", api_key="none", max_retries=0)
        ids = []
        for _ in range(4):
            raw = client.chat.completions.with_raw_response.create(model="tiny", messages=HELLO, max_tokens=3)
            ids.append((raw.headers["x-trace-id"], raw.parse().usage))
        listed = httpx.get(f"{s.url}/v1/traces").json()["data"]
        assert [t["trace_id"] for t in listed] == [ids[3][0], ids[2][0]]
        assert httpx.get(f"{s.url}/v1/traces/{ids[0][0]}").status_code == 404
        span = model_span(get_trace(s, ids[3][0]))
        assert tokens(span) == (ids[3][1].prompt_tokens, ids[3][1].completion_tokens)
        assert not set(tracing.CONTENT_KEYS) & set(span["attributes"])


def test_tracing_off_answers_clearly(tmp_path, tiny_hf_dir):
    app = create_app(store=make_store(tmp_path, tiny_hf_dir), engine_config=small_engine_config(),
                     trace=TraceSettings(enabled=False, path=tmp_path / "traces.sqlite"))
    with start_server(app) as s:
        client = openai.OpenAI(base_url=f"{s.url}/v1", api_key="none", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="tiny", messages=HELLO, max_tokens=2)
        assert "x-trace-id" not in raw.headers
        chunks = list(client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2, stream=True))
        assert all("trace_id" not in (c.model_extra or {}) for c in chunks)
        r = httpx.get(f"{s.url}/v1/traces")
        assert r.status_code == 404 and "--no-trace" in r.json()["error"]["message"]
        r = httpx.post(f"{s.url}/v1/feedback", json={"trace_id": "0" * 32, "score": 1})
        assert r.status_code == 409 and "tracing is off" in r.json()["error"]["message"]
    assert not (tmp_path / "traces.sqlite").exists()
