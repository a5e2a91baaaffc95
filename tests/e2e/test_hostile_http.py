"""Hostile and careless HTTP input against a real server on 127.0.0.1 (issue 14, sections 2 and 3).

Each test is one former 500 / stall / wrong answer: now a 4xx with a one-line message in the route's own error
shape (OpenAI routes {"error": {"message", "type", "param", "code"}}, Ollama routes {"error": "..."}), and the
server keeps serving others. Section 3: Host allow-list (DNS rebinding), CORS origins, JSON content type.
"""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import httpx
import pytest

from athanor.engine.config import EngineConfig
from athanor.serve.app import create_app
from tests.e2e.conftest import make_store, start_server

MAX_BODY = 8 * 2**20


@pytest.fixture(scope="module")
def srv(tmp_path_factory, tiny_hf_dir):
    store = make_store(tmp_path_factory.mktemp("hostile_home"), tiny_hf_dir)
    app = create_app(store=store, engine_config=EngineConfig(kv_cache_bytes=64 * 2**20, max_num_seqs=4),
                     allowed_hosts=["my.box"], origins=["https://app.example"], max_body_bytes=MAX_BODY)
    with start_server(app) as s:
        yield s


def openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and "\n" not in err["message"], err
    return err


def ollama_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and "\n" not in body["error"], body
    return body["error"]


def still_serves(srv) -> None:
    r = httpx.post(f"{srv.url}/api/generate", json={"model": "tiny", "prompt": "hi", "stream": False,
                                                     "options": {"num_predict": 2}}, timeout=60)
    assert r.status_code == 200 and r.json()["done"]


def post_raw(srv, path: str, body: bytes, **headers) -> httpx.Response:
    return httpx.post(f"{srv.url}{path}", content=body, headers={"Content-Type": "application/json"} | headers,
                      timeout=60)


# --- section 3: a server a web page cannot drive ----------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:11435", "127.0.0.1.nip.io", "10.0.0.8"])
def test_foreign_host_is_403_on_every_route(srv, host):
    for method, path in [("GET", "/api/tags"), ("GET", "/v1/models"), ("GET", "/health"), ("POST", "/api/copy")]:
        r = httpx.request(method, f"{srv.url}{path}", headers={"Host": host}, json={"source": "tiny",
                                                                                   "destination": "stolen"})
        message = ollama_error(r, 403) if path.startswith("/api/") else openai_error(r, 403)["message"]
        assert r.status_code == 403 and message.startswith("host"), (method, path, r.text)
    assert "stolen:latest" not in {m["model"] for m in httpx.get(f"{srv.url}/api/tags").json()["models"]}


@pytest.mark.parametrize("host", ["localhost", "localhost:1234", "127.0.0.1", "[::1]:11435", "my.box", "app.localhost"])
def test_local_and_allowed_hosts_are_served(srv, host):
    assert httpx.get(f"{srv.url}/api/tags", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", None])
def test_non_json_bodies_are_415_and_change_nothing(srv, content_type):
    body = json.dumps({"source": "tiny", "destination": "csrf"}).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    r = httpx.post(f"{srv.url}/api/copy", content=body, headers=headers)  # None: httpx sends no content type
    assert "application/json" in ollama_error(r, 415)
    r = httpx.post(f"{srv.url}/v1/chat/completions", content=b'{"model": "tiny"}', headers=headers)
    openai_error(r, 415)
    assert "csrf:latest" not in {m["model"] for m in httpx.get(f"{srv.url}/api/tags").json()["models"]}
    ok = post_raw(srv, "/api/show", b'{"model": "tiny"}', **{"Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


def test_cors_answers_only_allowed_origins(srv):
    copy = {"source": "tiny", "destination": "from-page"}
    evil = httpx.post(f"{srv.url}/api/copy", json=copy, headers={"Origin": "https://evil.example"})
    assert "origin" in ollama_error(evil, 403)
    assert "access-control-allow-origin" not in evil.headers
    pre = httpx.options(f"{srv.url}/api/chat", headers={"Origin": "https://evil.example",
                                                         "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers
    for origin in ("https://app.example", "http://localhost:5173", "http://127.0.0.1", "vscode-webview://abc"):
        pre = httpx.options(f"{srv.url}/api/chat", headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                             "Access-Control-Request-Headers": "content-type"})
        assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == origin
        assert "POST" in pre.headers["access-control-allow-methods"]
        r = httpx.get(f"{srv.url}/api/tags", headers={"Origin": origin})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
    assert "from-page:latest" not in {m["model"] for m in httpx.get(f"{srv.url}/api/tags").json()["models"]}
    same = httpx.get(f"{srv.url}/api/tags", headers={"Origin": srv.url})  # the /ui console, same origin
    assert same.status_code == 200


def test_real_clients_still_work(srv):
    import ollama
    import openai

    oa = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="unused", max_retries=0)
    reply = oa.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert ollama.Client(host=srv.url).generate(model="tiny", prompt="hi", options={"num_predict": 2}).done


# --- section 2: unknown routes, size limits ---------------------------------------------------------------------


def test_unknown_routes_and_methods_use_the_api_shape(srv):
    assert openai_error(httpx.get(f"{srv.url}/v1/nope"), 404)["type"] == "not_found_error"
    assert "no route" in ollama_error(httpx.get(f"{srv.url}/api/nope"), 404)
    openai_error(httpx.get(f"{srv.url}/v1/chat/completions"), 405)
    assert "GET" in ollama_error(httpx.get(f"{srv.url}/api/chat"), 405)
    assert "detail" not in httpx.get(f"{srv.url}/nowhere").json()


def test_body_over_the_cap_is_413(srv):
    big = json.dumps({"model": "tiny", "prompt": "x" * (MAX_BODY + 10)}).encode()
    openai_error(post_raw(srv, "/v1/completions", big), 413)

    def chunks():  # no Content-Length: the cap holds while reading
        for _ in range(MAX_BODY // 2**20 + 2):
            yield b" " * 2**20

    r = httpx.post(f"{srv.url}/api/generate", content=chunks(), headers={"Content-Type": "application/json"})
    ollama_error(r, 413)
    still_serves(srv)


# --- section 2: values ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_ctx", [-1, 0, 1e12, 10**12, "4096", True, 2.5])
def test_absurd_num_ctx_is_400(srv, num_ctx):
    r = httpx.post(f"{srv.url}/api/generate", json={"model": "tiny", "prompt": "hi", "stream": False,
                                                     "options": {"num_ctx": num_ctx, "num_predict": 1}}, timeout=60)
    assert "num_ctx" in ollama_error(r, 400)
    still_serves(srv)


def test_one_clients_num_ctx_never_changes_a_shared_model(srv):
    still_serves(srv)  # loaded with its default context
    default_ctx = srv.manager.models["tiny:latest"].max_model_len
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 200,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{srv.url}/v1/chat/completions", json=body, timeout=60) as stream:
        lines = stream.iter_lines()
        next(lines)  # the stream has begun: the model is in use
        r = httpx.post(f"{srv.url}/api/generate", json={"model": "tiny", "prompt": "hi", "stream": False,
                                                         "options": {"num_ctx": 32, "num_predict": 1}})
        assert "num_ctx" in ollama_error(r, 409)
        assert srv.manager.models["tiny:latest"].max_model_len == default_ctx
        rest = [json.loads(x[6:]) for x in lines if x.startswith("data: {")]
    assert [c["choices"][0]["finish_reason"] for c in rest if c["choices"]][-1] == "length"
    assert rest[-1]["usage"]["completion_tokens"] == 200  # every token came: the context did not change under it
    ps = {m["model"]: m for m in httpx.get(f"{srv.url}/api/ps").json()["models"]}
    assert ps["tiny:latest"]["context_length"] == default_ctx
    # idle: the same request reloads the model with its context, and a plain request gets the default back
    r = httpx.post(f"{srv.url}/api/generate", json={"model": "tiny", "prompt": "hi", "stream": False,
                                                     "options": {"num_ctx": 32, "num_predict": 1}}, timeout=60)
    assert r.status_code == 200 and srv.manager.models["tiny:latest"].max_model_len == 32
    still_serves(srv)
    assert srv.manager.models["tiny:latest"].max_model_len == default_ctx


def test_lone_surrogates_are_400(srv):
    openai_error(post_raw(srv, "/v1/completions", b'{"model": "tiny", "prompt": "a\\ud800b", "max_tokens": 1}'), 400)
    ollama_error(post_raw(srv, "/api/generate", b'{"model": "tiny", "prompt": "\\udc00", "stream": false}'), 400)
    ollama_error(post_raw(srv, "/api/show", b'{"model": "tiny\\udbff"}'), 400)
    paired = post_raw(srv, "/api/generate", b'{"model": "tiny", "prompt": "\\ud83d\\ude00", "stream": false, '
                                            b'"options": {"num_predict": 1}}')
    assert paired.status_code == 200  # an escaped emoji (a valid pair) is fine
    still_serves(srv)


def test_long_and_nul_names_are_400(srv):
    long = "a" * 300
    assert "255" in ollama_error(httpx.post(f"{srv.url}/api/show", json={"model": long}), 400)
    openai_error(httpx.post(f"{srv.url}/v1/chat/completions",
                            json={"model": long, "messages": [{"role": "user", "content": "x"}]}), 400)
    ollama_error(httpx.post(f"{srv.url}/api/show", json={"model": "ti\0ny"}), 400)
    ollama_error(httpx.post(f"{srv.url}/api/copy", json={"source": "tiny", "destination": "x\0y"}), 400)
    ollama_error(httpx.post(f"{srv.url}/api/show", json={"model": "tiny\n"}), 400)  # `$` no longer passes "\n"
    openai_error(httpx.get(f"{srv.url}/v1/models/ti%00ny"), 400)
    openai_error(httpx.get(f"{srv.url}/v1/models/{'b' * 4000}"), 400)
    still_serves(srv)


def test_nul_in_a_knowledge_base_path_is_400(srv, tmp_path):
    srv.app.state.kb_roots = [str(tmp_path)]
    try:
        r = httpx.post(f"{srv.url}/v1/kb/notes/paths", json={"paths": [f"{tmp_path}/a\0b"]})
        assert "NUL" in openai_error(r, 400)["message"]
    finally:
        del srv.app.state.kb_roots


def test_huge_keep_alive_then_ps_still_works(srv):
    r = httpx.post(f"{srv.url}/api/generate", json={"model": "tiny", "keep_alive": 1e308}, timeout=60)
    assert r.status_code == 200 and r.json()["done_reason"] == "load"
    ps = httpx.get(f"{srv.url}/api/ps")
    assert ps.status_code == 200 and ps.json()["models"][0]["expires_at"].startswith("9999")
    r = httpx.post(f"{srv.url}/api/generate", json={"model": "tiny", "keep_alive": "99999999999999999999h"})
    assert r.status_code == 200 and httpx.get(f"{srv.url}/api/ps").status_code == 200
    httpx.post(f"{srv.url}/api/generate", json={"model": "tiny", "keep_alive": "5m"})


CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}


@pytest.mark.parametrize("field,value", [("n", "2"), ("n", True), ("max_tokens", "3"), ("max_tokens", 2.0),
                                         ("temperature", "0.5"), ("temperature", True), ("stream", "false"),
                                         ("stream", 0), ("logprobs", 1), ("seed", "1")])
def test_wrong_types_are_400_not_coerced_openai(srv, field, value):
    # OpenAI answers 400 "Invalid type for 'n': expected an integer, but got a string instead."
    err = openai_error(httpx.post(f"{srv.url}/v1/chat/completions", json=CHAT | {field: value}), 400)
    assert err["param"] == field


@pytest.mark.parametrize("body", [{"stream": "false"}, {"stream": 0}, {"raw": "yes"}, {"options": {"temperature": "0.5"}},
                                  {"options": {"num_predict": True}}, {"options": {"seed": 1.5}}, {"keep_alive": True},
                                  {"context": ["1"]}])
def test_wrong_types_are_400_not_coerced_ollama(srv, body):
    ollama_error(httpx.post(f"{srv.url}/api/generate", json={"model": "tiny", "prompt": "hi"} | body), 400)


def test_workflow_run_lookup_is_literal(srv):
    from athanor.workflow.runs import RunStore

    observe = RunStore().observer(SimpleNamespace(name="demo", mode="workflow", source="test"))
    run_id = "3f2a9c1e-0000-4000-8000-000000000001"
    observe({"event": "workflow_started", "data": {"id": run_id, "inputs": {"secret": "of another user"}}})
    for probe in ("%", "_", "3f2a%", "3f2a9c1e-0000-4000-8000-00000000000_", "3f2a"):
        r = httpx.get(f"{srv.url}/v1/workflows/run/{probe.replace('%', '%25')}")
        assert r.status_code == 404 and "secret" not in r.text, (probe, r.text)
    r = httpx.get(f"{srv.url}/v1/workflows/run/{run_id}")
    assert r.status_code == 200 and r.json()["id"] == run_id


def test_create_errors_reveal_no_paths(srv, tmp_path):
    existing_file, existing_dir = tmp_path / "notes.txt", tmp_path / "dir"
    existing_file.write_text("hello")
    existing_dir.mkdir()
    answers = set()
    for target in (str(existing_file), str(existing_dir), str(tmp_path / "missing.gguf"), "/etc/shadow",
                   "/proc/self/environ", str(tmp_path / "x\0y")):
        for body in ({"model": "probe", "from": target, "stream": False},
                     {"model": "probe", "modelfile": f"FROM {srv.manager.store.get('tiny').weights}\n"
                                                     f"ADAPTER {target}\n", "stream": False}):
            message = ollama_error(httpx.post(f"{srv.url}/api/create", json=body), 400)
            assert "/tmp" not in message and str(tmp_path) not in message
            answers.add(message)
    assert len(answers) == 1, answers  # the same words whether the path exists, is a dir, or is missing
    relative = httpx.post(f"{srv.url}/api/create", json={"model": "rel", "from": "./weights.gguf"})
    assert "absolute" in ollama_error(relative, 400) and "/tmp" not in relative.text


def test_create_messages_without_role_are_400(srv):
    """Found by the schema fuzz: a `messages` entry without `role` was a KeyError (500)."""
    for messages in ([{}], [{"content": "hi"}], [{"role": "user", "content": 3}], [{"role": "user", "content": "a",
                                                                                    "extra": "b"}]):
        body = {"model": "probe", "from": "tiny", "messages": messages, "stream": False}
        assert "messages" in ollama_error(httpx.post(f"{srv.url}/api/create", json=body), 400)


# --- section 2: load --------------------------------------------------------------------------------------------


def test_huge_prompt_tokenizes_while_health_answers(srv):
    still_serves(srv)
    prompt = "the quick brown fox jumps over the lazy dog. " * 45000  # ~2 MB
    done = threading.Event()
    result = {}

    def tokenize() -> None:
        result["r"] = httpx.post(f"{srv.url}/tokenize", json={"model": "tiny", "prompt": prompt}, timeout=300)
        done.set()

    worker = threading.Thread(target=tokenize)
    worker.start()
    deadline = time.monotonic() + 60
    while srv.manager.models["tiny:latest"].num_active == 0:  # the tokenize request holds the model
        assert time.monotonic() < deadline and not done.is_set(), "tokenize finished before it could be observed"
        time.sleep(0.005)
    health = httpx.get(f"{srv.url}/health", timeout=60)
    answered_during = not done.is_set()
    worker.join()
    assert health.status_code == 200 and answered_during  # the event loop was free while it encoded
    assert result["r"].status_code == 200 and result["r"].json()["count"] > 100_000


def test_too_many_sequences_in_one_request_is_400(srv):
    body = {"model": "tiny", "prompt": ["a"] * 256, "n": 16, "max_tokens": 1}
    err = openai_error(httpx.post(f"{srv.url}/v1/completions", json=body, timeout=120), 400)
    assert "4096 sequences" in err["message"]
    assert len(srv.manager.models["tiny:latest"].llm.engine.requests) == 0
    still_serves(srv)


def test_non_streamed_request_is_aborted_when_the_client_leaves(srv):
    still_serves(srv)
    engine = srv.manager.models["tiny:latest"].llm.engine
    before = engine.stats.num_generated_tokens
    body = {"model": "tiny", "prompt": "a", "n": 16, "max_tokens": 400, "ignore_eos": True}  # 6400 tokens asked
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{srv.url}/v1/completions", json=body, timeout=httpx.Timeout(60, read=0.5))
    deadline = time.monotonic() + 60
    while engine.requests or srv.manager.models["tiny:latest"].num_active:
        assert time.monotonic() < deadline, "the abandoned request kept running"
        time.sleep(0.05)
    assert engine.stats.num_generated_tokens - before < 16 * 400  # stopped early, not run to the end
    still_serves(srv)
