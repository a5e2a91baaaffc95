"""Traces for CLI runs: `athanor agent`, `athanor workflow run`, `athanor kb ask` and `athanor run PROMPT` record
their spans in `$ATHANOR_HOME/traces.sqlite`, like `athanor serve` does, so `athanor traces list` shows them.

`cli_trace()` turns tracing on for one command (ops/tracing_setup.py) and flushes and stops it when the command
ends, however it ends; `ATHANOR_TRACE=0` (or false/no/off) turns it off. Nothing is printed unless the command
asked to be verbose (then the trace ids go to stderr). `traced_group` is the typer callback of the `workflow` and
`kb` groups: their library code may not import ops/, so the trace is started here, around the subcommand.
Not for: making spans (athanor/tracing.py and the rooms) or storing them (ops/).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from collections.abc import Iterator

import typer

OFF = ("0", "false", "no", "off")
TRACED_SUBCOMMANDS = {"workflow": {"run"}, "kb": {"ask"}}  # group -> subcommands that record traces


def tracing_enabled() -> bool:
    return os.environ.get("ATHANOR_TRACE", "1").strip().lower() not in OFF


@contextlib.contextmanager
def cli_trace(verbose: bool = False) -> Iterator[object | None]:
    """Tracing on for the block (None when ATHANOR_TRACE is off); verbose: print the traces it recorded."""
    if not tracing_enabled():
        yield None
        return
    from athanor.ops.tracing_setup import start_tracing

    since = time.time()
    traces = start_tracing()
    try:
        yield traces
    finally:
        traces.flush()
        if verbose:
            for row in reversed(traces.store.list(since=since, limit=20)):
                print(f"trace {row['trace_id']} ({row['name']}, {row['spans']} spans)", file=sys.stderr)
        traces.stop()


def traced_group(ctx: typer.Context) -> None:
    """Typer callback of a command group: the subcommands listed in TRACED_SUBCOMMANDS run inside `cli_trace`.
    Their callbacks are wrapped (once), so tracing starts only when the command body runs (not for --help)."""
    name = ctx.invoked_subcommand
    if name not in TRACED_SUBCOMMANDS.get(ctx.info_name or "", ()):
        return
    command = ctx.command.get_command(ctx, name)
    if command is None or command.callback is None or getattr(command.callback, "traced", False):
        return
    inner = command.callback

    @functools.wraps(inner)
    def traced(*args, **kwargs):
        with cli_trace():
            return inner(*args, **kwargs)

    traced.traced = True
    command.callback = traced
