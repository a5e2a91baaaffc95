"""`athanor traces list|show` and `athanor feedback`: read and rate the traces in $ATHANOR_HOME/traces.sqlite.

They open the store directly (TraceStore), so they work with or without a running server; a server writing at
the same time is fine (SQLite WAL). `traces_app` is the typer group other ops commands join (`traces export`).
Imports only typer at module level: `athanor --help` stays instant. Not for: recording spans (tracing.py) or
the HTTP routes (serve/trace_routes.py).
"""

from __future__ import annotations

import json
import time

import typer

traces_app = typer.Typer(no_args_is_help=True, help="Traces of model calls, agents and workflows: list, show.")


def register(app: typer.Typer) -> None:
    app.add_typer(traces_app, name="traces",
                  help="Traces of every call through athanor serve, agents and workflows (list, show).")
    app.command("feedback")(feedback)


def _store():
    from athanor.ops.trace_store import TraceStore, default_path

    path = default_path()
    if not path.exists():
        raise ValueError(f"no traces yet: {path} does not exist (run `athanor serve` and call a model)")
    return TraceStore(path)


def _resolve(store, trace_id: str) -> str:
    full = store.resolve(trace_id)
    if full is None:
        raise ValueError(f"no trace {trace_id!r} in {store.path}")
    return full


@traces_app.command("list")
def list_traces(
    model: str | None = typer.Option(None, "--model", "-m", help="only calls to this model"),
    since: str | None = typer.Option(None, help="only traces newer than this: seconds or 30m, 1h, 2d"),
    feedback: str | None = typer.Option(None, help="good | bad | none (not rated) | any (rated)"),
    errors: bool = typer.Option(False, "--errors", help="only failed traces"),
    limit: int = typer.Option(50, min=1, max=100_000, help="rows shown (newest first)"),
    as_json: bool = typer.Option(False, "--json", help="JSON lines, one trace each"),
) -> None:
    """Recent traces, newest first: id, time, name, model, tokens in/out, latency, status, feedback."""
    from athanor.ops.trace_store import parse_since

    store = _store()
    try:
        rows = store.list(model, parse_since(since), feedback, errors, limit)
    finally:
        store.close()
    if as_json:
        for r in rows:
            typer.echo(json.dumps(r))
        return
    _print_table(rows)


def _print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for name, justify in (("ID", "left"), ("TIME", "left"), ("NAME", "left"), ("MODEL", "left"),
                          ("IN", "right"), ("OUT", "right"), ("LATENCY", "right"), ("STATUS", "left"),
                          ("FEEDBACK", "left")):
        table.add_column(name, justify=justify, no_wrap=name in ("ID", "TIME"))
    for r in rows:
        table.add_row(r["trace_id"][:12], time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["start"])),
                      r["name"] or "", r["model"] or "", str(r["input_tokens"]), str(r["output_tokens"]),
                      _secs(r["duration"]), r["status"], _verdict(r.get("score")))
    Console(width=160).print(table)
    if not rows:
        typer.echo("no traces match")


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


def _verdict(score: float | None) -> str:
    if score is None:
        return "-"
    return "good" if score > 0 else "bad" if score < 0 else "neutral"


@traces_app.command("show")
def show(
    trace_id: str = typer.Argument(..., help="a trace id or its first characters"),
    as_json: bool = typer.Option(False, "--json", help="the whole trace as JSON (spans, attributes, feedback)"),
) -> None:
    """One trace as a span tree: start offset, duration, tokens, time to first token, status; then feedback."""
    store = _store()
    try:
        trace = store.get(_resolve(store, trace_id))
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps(trace, indent=2))
        return
    for line in render_tree(trace):
        typer.echo(line)


def render_tree(trace: dict) -> list[str]:
    """The trace's lines: a header, each span indented under its parent, then its feedback."""
    from athanor import tracing

    head = (f"trace {trace['trace_id']}  {trace['name']}  {trace['status']}  {_secs(trace['duration'])}  "
            f"tokens {trace['input_tokens']} in / {trace['output_tokens']} out")
    lines = [head]
    spans = trace["spans"]
    ids = {s["span_id"] for s in spans}
    children: dict[str | None, list[dict]] = {}
    for s in spans:
        children.setdefault(s["parent_id"] if s["parent_id"] in ids else None, []).append(s)
    t0 = trace["start"]

    def walk(parent: str | None, depth: int) -> None:
        for s in children.get(parent, []):
            a = s["attributes"]
            parts = [f"+{s['start'] - t0:.3f}s", _secs((s["end_time"] or s["start"]) - s["start"]),
                     "  " * depth + f"{s['name']} [{s['kind']}]"]
            if tracing.INPUT_TOKENS in a or tracing.OUTPUT_TOKENS in a:
                parts.append(f"tokens {a.get(tracing.INPUT_TOKENS, '-')}/{a.get(tracing.OUTPUT_TOKENS, '-')}")
            if tracing.TTFT in a:
                parts.append(f"ttft {_secs(a[tracing.TTFT])}")
            if a.get(tracing.FINISH_REASONS):
                parts.append("finish " + ",".join(map(str, a[tracing.FINISH_REASONS])))
            if s["status"] != "ok":
                parts.append(f"ERROR {s['error'] or ''}".rstrip())
            lines.append("  ".join(parts))
            walk(s["span_id"], depth + 1)

    walk(None, 0)
    for f in trace["feedback"]:
        extra = "".join(f"  {k}: {f[k]!r}" for k in ("comment", "correction") if f.get(k))
        lines.append(f"feedback {_verdict(f['score'])} ({f['score']:+g}, {f['source']}){extra}")
    return lines


def feedback(
    trace_id: str = typer.Argument(..., help="a trace id or its first characters"),
    good: bool = typer.Option(False, "--good", help="rate the trace good (score 1)"),
    bad: bool = typer.Option(False, "--bad", help="rate the trace bad (score -1)"),
    score: float | None = typer.Option(None, help="a score in -1..1 instead of --good/--bad"),
    comment: str | None = typer.Option(None, help="why"),
    correction: str | None = typer.Option(None, help="the answer it should have given (exports use it)"),
) -> None:
    """Rate a trace (stored with it; `traces list --feedback good|bad` and dataset exports read it)."""
    from athanor.ops.trace_store import parse_score

    given = [v for v in (1.0 if good else None, -1.0 if bad else None, score) if v is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of --good, --bad or --score X")
    value = parse_score(given[0])
    store = _store()
    try:
        row = store.add_feedback(_resolve(store, trace_id), value, comment, correction, "cli")
    finally:
        store.close()
    typer.echo(f"feedback {row['id']} on trace {row['trace_id']}: {_verdict(value)} ({value:+g})")
