"""Operations against a real server: /health (and a stuck engine loop turning it red), /metrics, request ids,
the access log, bearer auth on both APIs, and clients that disconnect mid-stream giving their KV blocks back."""

from __future__ import annotations

import json
import logging
import threading
import time

import httpx
import ollama
import openai
import pytest

from athanor.serve.app import create_app
from tests.e2e.conftest import make_store, small_engine_config, start_server

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}]}


def test_health_metrics_request_id_and_access_log(server, caplog):
    def logged() -> list[dict]:
        return [json.loads(rec.getMessage()) for rec in caplog.records if "req-abc-123" in rec.getMessage()]

    with caplog.at_level(logging.INFO, logger="athanor.serve.access"):
        r = httpx.post(f"{server.url}/v1/chat/completions", json=CHAT | {"max_tokens": 3, "ignore_eos": True},
                       headers={"X-Request-Id": "req-abc-123"}, timeout=60)  # loads the model
        deadline = time.monotonic() + 5  # the line is written once the response is fully sent: may trail it
        while not logged() and time.monotonic() < deadline:
            time.sleep(0.02)
        httpx.get(f"{server.url}/health", headers={"X-Request-Id": "req-after"})  # a later request's line,
        while not any("req-after" in rec.getMessage() for rec in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.02)  # once it is there, a second line for the first request would be too
    assert r.status_code == 200 and r.headers["x-request-id"] == "req-abc-123"
    lines = logged()
    assert len(lines) == 1 and lines[0]["status"] == 200 and lines[0]["path"] == "/v1/chat/completions"
    assert len(httpx.get(f"{server.url}/health").headers["x-request-id"]) == 32  # generated when not sent
    curl_style = httpx.post(f"{server.url}/api/generate", content=json.dumps({"model": "tiny", "prompt": "hi",
                            "stream": False, "options": {"num_predict": 1}}),
                            headers={"Content-Type": "application/x-www-form-urlencoded"})  # what `curl -d` sends
    # a form body is what a web page may POST cross-site without a preflight: never read as JSON (issue 14)
    assert curl_style.status_code == 415 and "application/json" in curl_style.json()["error"]
    health = httpx.get(f"{server.url}/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    text = httpx.get(f"{server.url}/metrics").text
    assert 'athanor_requests_total{method="POST",route="/v1/chat/completions",status="200"}' in text
    assert server.metric("athanor_generation_tokens_total") >= 3 and server.metric("athanor_prompt_tokens_total") > 0
    assert server.metric("athanor_time_to_first_token_seconds_count") >= 1
    assert server.metric("athanor_inter_token_latency_seconds_count") >= 2  # 3 tokens: 2 gaps
    assert server.metric("athanor_kv_blocks_total", "tiny:latest") > 0
    # 3 tokens: the first comes from the prefill step, the other 2 from decode steps, which the engine times
    assert server.metric("athanor_engine_decode_steps", "tiny:latest") >= 2
    assert server.metric("athanor_engine_decode_seconds", "tiny:latest") > 0
    for gauge in ("athanor_queue_depth", "athanor_running_sequences", "athanor_kv_blocks_in_use"):
        assert f"# TYPE {gauge} gauge" in text


def test_disconnect_mid_stream_frees_blocks(server):
    """20 clients drop their streams after a few chunks; their requests are aborted and every block returns."""
    body = CHAT | {"max_tokens": 400, "stream": True, "ignore_eos": True}
    if "tiny:latest" not in server.manager.models:  # an earlier test may have unloaded it: preload
        httpx.post(f"{server.url}/api/generate", json={"model": "tiny"}, timeout=30)
    stats = server.manager.models["tiny:latest"].llm.engine.stats
    before = stats.num_generated_tokens  # the engine's own count: tokens no client read are counted too

    def drop_after_chunks(n_chunks: int) -> None:
        with httpx.Client(timeout=60) as c, c.stream("POST", f"{server.url}/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            for i, _ in enumerate(r.iter_lines()):
                if i >= n_chunks:
                    return  # leaving the block closes the connection mid-stream

    threads = [threading.Thread(target=drop_after_chunks, args=(3 + i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    deadline = time.monotonic() + 15
    while server.manager.kv_blocks_in_use() or server.metric("athanor_running_sequences"):
        assert time.monotonic() < deadline, "aborted streams kept their KV blocks"
        time.sleep(0.1)
    assert server.metric("athanor_kv_blocks_in_use") == 0  # no sequence is left, so no token comes after this
    generated = stats.num_generated_tokens - before
    assert generated < 20 * 400 / 2, f"{generated} tokens generated: streams were not aborted early"


def test_bearer_auth_and_stuck_engine_health(tmp_path, tiny_hf_dir):
    app = create_app(store=make_store(tmp_path, tiny_hf_dir), engine_config=small_engine_config(),
                     api_key="s3cret", health_stall_seconds=0.5)
    with start_server(app) as s:
        # 1. auth: /health is public; everything else needs the key, in each API's error shape
        assert httpx.get(f"{s.url}/health").status_code == 200
        no_key = httpx.get(f"{s.url}/v1/models")
        assert no_key.status_code == 401 and no_key.json()["error"]["type"] == "authentication_error"
        assert httpx.get(f"{s.url}/api/tags").json() == {"error": "missing or invalid API key (Authorization: Bearer KEY)"}
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{s.url}/v1", api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=f"{s.url}/v1", api_key="s3cret", max_retries=0)
        assert good.chat.completions.create(model="tiny", messages=CHAT["messages"], max_tokens=2).choices
        oc = ollama.Client(host=s.url, headers={"Authorization": "Bearer s3cret"})
        assert "tiny:latest" in {m.model for m in oc.list().models}
        with pytest.raises(ollama.ResponseError):
            ollama.Client(host=s.url).list()
        # 2. a stuck engine loop: the step blocks while a request waits -> /health turns 503, then recovers
        model = s.manager.models["tiny:latest"]
        release, real_step = threading.Event(), model.llm.engine.step
        model.llm.engine.step = lambda: (release.wait(20), real_step())[1]
        try:
            waiter = threading.Thread(target=lambda: good.chat.completions.create(
                model="tiny", messages=CHAT["messages"], max_tokens=2))
            waiter.start()
            deadline = time.monotonic() + 10
            while (h := httpx.get(f"{s.url}/health")).status_code == 200:
                assert time.monotonic() < deadline, "a stuck engine loop never turned /health red"
                time.sleep(0.1)
            assert h.status_code == 503 and h.json()["stuck_models"] == ["tiny:latest"]
        finally:
            release.set()
            model.llm.engine.step = real_step
        waiter.join(timeout=20)
        assert httpx.get(f"{s.url}/health").status_code == 200


def test_bounded_queue_503_and_graceful_shutdown_drains_streams(tmp_path, tiny_hf_dir):
    """max_pending=1: a second request while one streams gets 503 + Retry-After in each API's shape. Then a
    shutdown (what uvicorn does on SIGTERM) lets the in-flight stream finish before the server exits."""
    app = create_app(store=make_store(tmp_path, tiny_hf_dir), engine_config=small_engine_config(), max_pending=1)
    body = CHAT | {"max_tokens": 400, "stream": True, "ignore_eos": True}
    with start_server(app) as s:
        lines: list[str] = []
        with httpx.Client(timeout=60) as c, c.stream("POST", f"{s.url}/v1/chat/completions", json=body) as r:
            it = r.iter_lines()
            lines.append(next(it))
            busy = httpx.post(f"{s.url}/v1/chat/completions", json=CHAT | {"max_tokens": 1})
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
            assert busy.json()["error"]["code"] == "overloaded"
            busy = httpx.post(f"{s.url}/api/chat", json=CHAT | {"stream": False})
            assert busy.status_code == 503 and "busy" in busy.json()["error"]
            s.uvicorn_server.should_exit = True  # SIGTERM's handler does exactly this
            lines += list(it)
    chunks = [json.loads(x[6:]) for x in lines if x.startswith("data: {")]
    assert lines[-1] == "data: [DONE]" or lines[-2:] == ["data: [DONE]", ""]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_ps_rows_for_the_cli(server):
    from athanor.errors import AthanorError
    from athanor.serve.client import loaded_models

    httpx.post(f"{server.url}/api/generate", json={"model": "tiny", "keep_alive": "10m"}, timeout=30)
    rows = {r["name"]: r for r in loaded_models(server.url)}
    assert rows["tiny"]["context"] > 0 and rows["tiny"]["size"] > 0
    assert rows["tiny"]["until"] in ("9 minutes from now", "10 minutes from now")
    with pytest.raises(AthanorError, match="no server"):
        loaded_models("http://127.0.0.1:9")
