"""The trace store's helpers and the `athanor traces` / `athanor feedback` commands over a real traces.sqlite,
filled by real spans through the installed tracer (no server): since/score parsing, id prefixes, the span tree,
retention at flush, and clear errors for bad input."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from athanor import tracing
from athanor.cli import app
from athanor.ops.trace_store import TraceStore, default_path, parse_score, parse_since
from athanor.ops.tracing_setup import TraceSettings, start_tracing

runner = CliRunner()


@pytest.mark.parametrize("text,seconds", [("3600", 3600), ("30m", 1800), ("1h", 3600), ("2d", 172800),
                                          ("45s", 45), (" 1.5H ", 5400), (90, 90)])
def test_since_takes_seconds_or_spans(text, seconds):
    assert parse_since(text, now=1e9) == pytest.approx(1e9 - seconds)


@pytest.mark.parametrize("text", ["yesterday", "-1h", "h", "1y", "nan", "inf", "1e400", "5mm"])
def test_since_refuses_the_rest(text):
    with pytest.raises(ValueError, match="since"):
        parse_since(text)


@pytest.mark.parametrize("value,score", [("good", 1.0), ("BAD", -1.0), (0.5, 0.5), (-1, -1.0), ("0.25", 0.25)])
def test_scores(value, score):
    assert parse_score(value) == score


@pytest.mark.parametrize("value", [2, -1.01, True, None, "meh", [1], float("nan")])
def test_bad_scores(value):
    with pytest.raises(ValueError, match="score"):
        parse_score(value)


def record_trace(model: str = "smollm2", fail: bool = False) -> str:
    """One request-shaped trace: an http root with a model span under it (as a served call makes)."""
    with (tracing.span("POST /v1/chat/completions", "http") as root,
          tracing.span(f"chat {model}", "llm", **{tracing.REQUEST_MODEL: model}) as call):
        call.set_usage(11, 7).set(tracing.TTFT, 0.012).set(tracing.FINISH_REASONS, ["stop"])
        call.set_content(input=[{"role": "user", "content": "hi"}], output={"role": "assistant", "content": "yo"})
        if fail:
            call.fail("ContextLengthError: too long")
    return root.trace_id


@pytest.fixture
def traces():
    t = start_tracing(TraceSettings(path=default_path(), retention=3))
    try:
        yield t
    finally:
        t.stop()


def test_list_show_and_feedback_commands(traces):
    ok = record_trace()
    failed = record_trace("tiny", fail=True)
    traces.flush()
    out = runner.invoke(app, ["traces", "list", "--json"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.output.splitlines()]
    assert [r["trace_id"] for r in rows] == [failed, ok]
    assert (rows[1]["input_tokens"], rows[1]["output_tokens"], rows[1]["model"]) == (11, 7, "smollm2")
    errors = runner.invoke(app, ["traces", "list", "--errors", "--json"])
    assert [json.loads(line)["trace_id"] for line in errors.output.splitlines()] == [failed]
    by_model = runner.invoke(app, ["traces", "list", "--model", "smollm2", "--since", "1h"])
    assert ok[:12] in by_model.output and failed[:12] not in by_model.output

    shown = runner.invoke(app, ["traces", "show", ok[:8]])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0].startswith(f"trace {ok}") and "tokens 11 in / 7 out" in lines[0]
    http_line = next(line for line in lines if "[http]" in line)
    llm_line = next(line for line in lines if "[llm]" in line)
    assert llm_line.index("chat smollm2") > http_line.index("POST")  # indented under its parent
    assert "tokens 11/7" in llm_line and "ttft 12ms" in llm_line and "finish stop" in llm_line
    assert "ERROR ContextLengthError" in runner.invoke(app, ["traces", "show", failed]).output

    rated = runner.invoke(app, ["feedback", ok, "--score", "0.5", "--comment", "fine"])
    assert rated.exit_code == 0 and "good (+0.5)" in rated.output
    assert "feedback good (+0.5, cli)  comment: 'fine'" in runner.invoke(app, ["traces", "show", ok]).output
    good = runner.invoke(app, ["traces", "list", "--feedback", "good", "--json"])
    assert [json.loads(line)["trace_id"] for line in good.output.splitlines()] == [ok]
    full = json.loads(runner.invoke(app, ["traces", "show", ok, "--json"]).output)
    assert full["feedback"][0]["comment"] == "fine" and len(full["spans"]) == 2


@pytest.mark.parametrize("args,message", [
    (["feedback", "abc"], "exactly one of"),
    (["feedback", "abc", "--good", "--bad"], "exactly one of"),
    (["feedback", "abc", "--score", "3"], "score must be"),
    (["feedback", "0123", "--good"], "no trace"),
    (["traces", "show", "zzzz"], "no trace"),
    (["traces", "list", "--since", "soon"], "since must be"),
    (["traces", "list", "--feedback", "great"], "feedback filter"),
])
def test_bad_cli_input_is_one_clear_line(traces, args, message):
    record_trace()
    traces.flush()
    result = runner.invoke(app, args)
    assert result.exit_code != 0 and message in str(result.exception)


def test_no_store_yet_is_a_clear_error():
    result = runner.invoke(app, ["traces", "list"])
    assert result.exit_code != 0 and "no traces yet" in str(result.exception)


def test_prefix_must_be_unique(tmp_path):
    store = TraceStore(tmp_path / "t.sqlite")
    spans = [tracing.Span("a", "http", tid, tracing.new_span_id(), root=True) for tid in ("ab" + "0" * 30,
                                                                                          "ab" + "1" * 30)]
    for s in spans:
        s.end_time = time.time()
    store.write_spans(spans)
    with pytest.raises(ValueError, match="several"):
        store.resolve("ab")
    assert store.resolve("ab1") == "ab" + "1" * 30 and store.resolve("ac") is None and store.resolve("x'") is None


def test_retention_holds_after_every_flush(traces):
    ids = []
    for _ in range(5):
        ids.append(record_trace())
        traces.flush()
        assert traces.store.count() <= 3
    assert [t["trace_id"] for t in traces.store.list()] == ids[:1:-1]


def test_serve_flags_become_trace_settings(monkeypatch):
    import athanor.serve.app as serve_app

    seen = []
    monkeypatch.setattr(serve_app, "serve", lambda **options: seen.append(options["trace"]))
    assert runner.invoke(app, ["serve", "--no-trace-content", "--trace-retention", "50",
                               "--otlp-endpoint", "http://127.0.0.1:4318"]).exit_code == 0
    assert runner.invoke(app, ["serve", "--no-trace"]).exit_code == 0
    assert runner.invoke(app, ["serve"]).exit_code == 0
    custom, off, default = seen
    assert (custom.enabled, custom.content, custom.retention, custom.otlp_endpoint) == (
        True, False, 50, "http://127.0.0.1:4318")
    assert not off.enabled and default == TraceSettings()
    assert runner.invoke(app, ["serve", "--trace-retention", "0"]).exit_code != 0
