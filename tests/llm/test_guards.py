"""Guards of OpenAI-compatible upstreams (llm/guards.py) against a real stub server on 127.0.0.1 that answers
scripted 429/503s with Retry-After, hangs, or succeeds; driven through OpenAIChatModel and the real `openai` SDK."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from fastapi.responses import JSONResponse

from athanor.llm.base import collect, load_chat_model
from athanor.llm.guards import CircuitBreaker, GuardConfig, UpstreamUnavailable, reset_breakers, retry_after_seconds
from tests.llm.openai_stub import make_app, serve_app

openai = pytest.importorskip("openai")


class Script:
    """Per model id: a list of steps consumed one per chat request; ("ok",) or (status, headers) or ("hang", s)."""

    def __init__(self) -> None:
        self.steps: dict[str, list[tuple]] = {}
        self.arrivals: dict[str, list[float]] = {}

    def set(self, model: str, *steps: tuple) -> None:
        self.steps[model] = list(steps)
        self.arrivals[model] = []


@pytest.fixture(scope="module")
def upstream():
    script, requests = Script(), []
    app = make_app(lambda messages, body: "fine: " + messages[-1]["content"], "m", requests)

    @app.middleware("http")
    async def scripted(request, call_next):
        if request.url.path != "/v1/chat/completions":
            return await call_next(request)
        model = (await request.json())["model"]
        script.arrivals.setdefault(model, []).append(time.monotonic())
        steps = script.steps.get(model) or [("ok",)]
        step = steps.pop(0) if len(steps) > 1 else steps[0]  # the last step repeats
        if step[0] == "ok":
            return await call_next(request)
        if step[0] == "hang":
            await asyncio.sleep(step[1])
            return await call_next(request)
        status, headers = step
        body = {"error": {"message": f"scripted {status}", "type": "server_error", "param": None, "code": None}}
        return JSONResponse(body, status_code=status, headers=headers)

    with serve_app(app) as url:
        yield url + "/v1", script


@pytest.fixture(autouse=True)
def fresh_breakers():
    reset_breakers()
    yield
    reset_breakers()


def model(url: str, name: str, **guard_fields):
    return load_chat_model(f"openai:{url}#{name}", api_key="k", timeout=guard_fields.pop("timeout", 30.0),
                           guards=GuardConfig(**guard_fields))


def ask(m, text="hi"):
    return m.chat([{"role": "user", "content": text}]).text


def test_429_with_retry_after_is_waited_then_retried(upstream):
    url, script = upstream
    script.set("a", (429, {"Retry-After": "1"}), ("ok",))
    assert ask(model(url, "a")) == "fine: hi"
    first, second = script.arrivals["a"]
    assert second - first >= 1.0  # the upstream's Retry-After was honoured, not the shorter backoff


def test_503s_are_retried_until_one_succeeds(upstream):
    url, script = upstream
    script.set("b", (503, {"Retry-After": "0"}), (503, {"retry-after-ms": "50"}), ("ok",))
    assert ask(model(url, "b")) == "fine: hi"
    assert len(script.arrivals["b"]) == 3


def test_stream_is_retried_before_its_first_chunk(upstream):
    url, script = upstream
    script.set("c", (429, {"Retry-After": "0"}), ("ok",))
    r = collect(model(url, "c").stream([{"role": "user", "content": "streamed"}]))
    assert r.text == "fine: streamed" and len(script.arrivals["c"]) == 2


def test_retry_after_beyond_the_cap_goes_back_to_the_caller_at_once(upstream):
    url, script = upstream
    script.set("d", (429, {"Retry-After": "3600"}), ("ok",))
    with pytest.raises(openai.RateLimitError):
        ask(model(url, "d", max_retry_after=60))
    assert len(script.arrivals["d"]) == 1


def test_retries_run_out_and_the_last_error_is_raised(upstream):
    url, script = upstream
    script.set("e", (503, {"Retry-After": "0"}))
    with pytest.raises(openai.InternalServerError):
        ask(model(url, "e", max_retries=2, failure_threshold=10))
    assert len(script.arrivals["e"]) == 3


def test_client_errors_are_neither_retried_nor_counted_by_the_breaker(upstream):
    url, script = upstream
    script.set("f", (400, {}))
    m = model(url, "f", failure_threshold=1)
    for _ in range(3):
        with pytest.raises(openai.BadRequestError):
            ask(m)
    assert len(script.arrivals["f"]) == 3  # each call reached the upstream: the breaker stayed closed


def test_breaker_opens_per_model_and_fails_fast(upstream):
    url, script = upstream
    script.set("g", (503, {"Retry-After": "0"}))
    m = model(url, "g", max_retries=0, failure_threshold=3, reset_seconds=300)
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            ask(m)
    with pytest.raises(UpstreamUnavailable, match="circuit open after 3 consecutive failures"):
        ask(model(url, "g"))  # another client of the same upstream model shares the breaker
    assert len(script.arrivals["g"]) == 3  # the fast failure never reached the upstream
    script.set("h", ("ok",))
    assert ask(model(url, "h")) == "fine: hi"  # another model on the same server is not affected


def test_half_open_trial_success_closes_the_breaker(upstream):
    url, script = upstream
    script.set("i", (503, {"Retry-After": "0"}), (503, {"Retry-After": "0"}), ("ok",))
    m = model(url, "i", max_retries=0, failure_threshold=2, reset_seconds=0)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            ask(m)
    assert ask(m) == "fine: hi" and ask(m) == "fine: hi"  # trial passed, then closed again
    assert m.guard().breaker.state == "closed"


def test_a_hung_upstream_times_out_and_is_retried(upstream):
    url, script = upstream
    script.set("j", ("hang", 5.0))
    with pytest.raises(openai.APITimeoutError):
        ask(model(url, "j", timeout=0.5, max_retries=1, backoff_base=0.0))
    assert len(script.arrivals["j"]) == 2


def test_unreachable_upstream_counts_against_the_breaker():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    m = model(f"http://127.0.0.1:{port}/v1", "k", max_retries=0, failure_threshold=1, reset_seconds=300)
    with pytest.raises(openai.APIConnectionError):
        ask(m)
    with pytest.raises(UpstreamUnavailable):
        ask(m)


def test_retry_after_parsing():
    class Err:
        def __init__(self, headers):
            self.response = type("R", (), {"headers": headers})()

    assert retry_after_seconds(Err({"retry-after": "7"})) == 7.0
    assert retry_after_seconds(Err({"retry-after-ms": "250", "retry-after": "7"})) == 0.25
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=120), usegmt=True)
    assert 100 < retry_after_seconds(Err({"retry-after": later})) <= 120
    assert retry_after_seconds(Err({"retry-after": "soon"})) is None
    assert retry_after_seconds(Err({})) is None


def test_breaker_state_machine_with_a_fake_clock():
    now = [0.0]
    b = CircuitBreaker(failure_threshold=2, reset_seconds=10, clock=lambda: now[0])
    b.on_failure()
    assert b.state == "closed"
    b.on_failure()
    assert b.state == "open"
    with pytest.raises(UpstreamUnavailable):
        b.before_call("x")
    now[0] = 10.0
    b.before_call("x")  # the one half-open trial
    with pytest.raises(UpstreamUnavailable):
        b.before_call("x")  # a second caller while the trial runs
    b.on_failure()  # trial failed: open again for another 10 s
    assert b.state == "open"
    now[0] = 20.0
    b.before_call("x")
    b.on_success()
    assert b.state == "closed" and b.num_failures == 0


def test_bad_guard_config_is_a_value_error():
    with pytest.raises(ValueError, match="failure_threshold"):
        GuardConfig(failure_threshold=0)
