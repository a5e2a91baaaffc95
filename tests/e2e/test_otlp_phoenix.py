"""End to end against a real OTLP collector: Arize Phoenix on 127.0.0.1 receives athanor's spans over OTLP/HTTP.

Phoenix runs as a subprocess from its own venv (`make install` puts it in .venv/phoenix: it pins anthropic<2, which
the dev extra's Anthropic tests outgrow), with its database in tmp_path and its telemetry off. athanor serves the
tiny model with `TraceSettings(otlp_endpoint=...)`; the real `openai` client calls it; Phoenix's REST API
(GET /v1/projects/default/spans/otlpv1?trace_id=...) must then hold the same trace: our ids, the parent link, and
token counts equal to the response's `usage`. Skips only when Phoenix is not installed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from athanor import tracing
from athanor.ops.tracing_setup import TraceSettings
from athanor.serve.app import create_app
from tests.e2e.conftest import make_store, small_engine_config, start_server

STARTUP_S = 120  # Phoenix's first start (migrations, UI assets) takes ~35 s on this 2-core machine
ARRIVAL_S = 30   # spans are batched (1 s) and then written by Phoenix's own queue
CLIENT_TRACE, CLIENT_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def phoenix_program() -> str | None:
    candidates = [os.environ.get("ATHANOR_PHOENIX"), str(Path(sys.prefix) / "phoenix" / "bin" / "phoenix"),
                  shutil.which("phoenix")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def run_phoenix(program: str, workdir: Path):
    """Phoenix serving on a free port; yields (base URL, process, log path). Stopped (SIGTERM, then kill) after."""
    workdir.mkdir()
    port = free_port()
    env = dict(os.environ, HOME=str(workdir), PHOENIX_WORKING_DIR=str(workdir), PHOENIX_HOST="127.0.0.1",
               PHOENIX_PORT=str(port), PHOENIX_GRPC_PORT=str(free_port()), PHOENIX_TELEMETRY_ENABLED="false",
               PHOENIX_ALLOW_EXTERNAL_RESOURCES="false")
    log = workdir / "phoenix.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([program, "serve"], env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}", proc, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"Phoenix exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    pytest.fail(f"Phoenix not ready after {STARTUP_S} s:\n{log.read_text()[-3000:]}")


def otlp_value(v: dict):
    """Phoenix's OTLP JSON AnyValue -> a Python value."""
    if v.get("array_value") is not None:
        return [otlp_value(x) for x in v["array_value"]["values"] or []]
    for key in ("string_value", "int_value", "double_value", "bool_value"):
        if v.get(key) is not None:
            return v[key]
    return None


def phoenix_spans(url: str, trace_id: str, names: set[str]) -> dict[str, dict]:
    """Spans of `trace_id` in Phoenix's default project by name, once all `names` have arrived."""
    deadline, found = time.monotonic() + ARRIVAL_S, {}
    while time.monotonic() < deadline:
        r = httpx.get(f"{url}/v1/projects/default/spans/otlpv1", params={"trace_id": trace_id}, timeout=10)
        if r.status_code == 200:  # 404 until the first span has created the default project
            found = {s["name"]: s | {"attributes": {a["key"]: otlp_value(a["value"]) for a in s["attributes"] or []}}
                     for s in r.json()["data"]}
            if names <= set(found):
                return found
        time.sleep(0.25)
    pytest.fail(f"spans {sorted(names - set(found))} of trace {trace_id} not in Phoenix after {ARRIVAL_S} s")


@pytest.fixture(scope="module")
def phoenix_and_athanor(tmp_path_factory, tiny_hf_dir):
    program = phoenix_program()
    if program is None:
        pytest.skip("Arize Phoenix is not installed (make install puts it in .venv/phoenix; or set ATHANOR_PHOENIX)")
    tmp = tmp_path_factory.mktemp("otlp")
    before = tracing.installed()  # another e2e server of this session may have installed its tracer
    with run_phoenix(program, tmp / "phoenix") as (url, proc, log):
        # athanor loads while Phoenix starts: the exporter needs no collector until it sends
        (tmp / "home").mkdir()
        store = make_store(tmp / "home", tiny_hf_dir)
        trace = TraceSettings(path=tmp / "traces.sqlite", otlp_endpoint=url)
        with start_server(create_app(store=store, engine_config=small_engine_config(), trace=trace)) as server:
            wait_ready(url, proc, log)
            yield url, server
    assert tracing.installed() is before  # the server's lifespan put back the tracer it replaced


def test_chat_span_reaches_phoenix_with_our_ids_and_usage(phoenix_and_athanor):
    phoenix, server = phoenix_and_athanor
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)
    raw = client.chat.completions.with_raw_response.create(
        model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=6, temperature=0,
        extra_headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
    reply = raw.parse()
    assert raw.headers["x-trace-id"] == CLIENT_TRACE  # the client's trace continued

    spans = phoenix_spans(phoenix, CLIENT_TRACE, {"POST /v1/chat/completions", "chat tiny"})
    root, llm = spans["POST /v1/chat/completions"], spans["chat tiny"]
    assert root["trace_id"] == llm["trace_id"] == CLIENT_TRACE
    assert root["parent_span_id"] == CLIENT_SPAN and llm["parent_span_id"] == root["span_id"]
    attrs = llm["attributes"]
    assert attrs[tracing.INPUT_TOKENS] == reply.usage.prompt_tokens
    assert attrs[tracing.OUTPUT_TOKENS] == reply.usage.completion_tokens
    assert attrs[tracing.REQUEST_MODEL] == "tiny" and attrs[tracing.OPERATION] == "chat"
    assert attrs["gen_ai.provider.name"] == "athanor"
    assert attrs[tracing.FINISH_REASONS] == [reply.choices[0].finish_reason]
    assert llm["status"]["code"] == 1  # OK
    assert int(root["start_time_unix_nano"]) <= int(llm["start_time_unix_nano"])
    assert int(llm["end_time_unix_nano"]) <= int(root["end_time_unix_nano"])

    # the local store and the collector hold the same spans (same ids, same token counts)
    server.app.state.tracing.flush()
    local = {s["name"]: s for s in server.app.state.tracing.store.get(CLIENT_TRACE)["spans"]}
    assert {n: s["span_id"] for n, s in local.items()} == {n: s["span_id"] for n, s in spans.items()}
    assert local["chat tiny"]["attributes"][tracing.INPUT_TOKENS] == attrs[tracing.INPUT_TOKENS]


def test_streamed_chat_span_reaches_phoenix(phoenix_and_athanor):
    phoenix, server = phoenix_and_athanor
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)
    with client.chat.completions.with_streaming_response.create(
            model="tiny", messages=[{"role": "user", "content": "count"}], max_tokens=5, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True}) as response:
        trace_id = response.headers["x-trace-id"]
        chunks = list(response.parse())
    usage = chunks[-1].usage
    assert usage.completion_tokens == 5

    spans = phoenix_spans(phoenix, trace_id, {"POST /v1/chat/completions", "chat tiny"})
    attrs = spans["chat tiny"]["attributes"]
    assert spans["POST /v1/chat/completions"]["parent_span_id"] is None  # a new trace: no parent
    assert attrs[tracing.INPUT_TOKENS] == usage.prompt_tokens and attrs[tracing.OUTPUT_TOKENS] == 5
    assert attrs[tracing.TTFT] > 0
