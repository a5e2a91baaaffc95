"""Turning tracing on for a process: the SQLite store, the writer, and any exporters, installed as one tracer.

`start_tracing(...)` is what `athanor serve` (and CLI commands that trace) call; it returns a `Tracing` whose
`flush()` makes every span ended so far readable and whose `stop()` uninstalls it. Exporters (OTLP, otlp.py) get
the same ended spans. Not for: making spans (athanor/tracing.py) or reading them (trace_store.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from athanor import tracing
from athanor.ops.trace_store import DEFAULT_RETENTION, SqliteTracer, TraceStore


@dataclasses.dataclass
class TraceSettings:
    enabled: bool = True
    path: str | Path | None = None        # default: $ATHANOR_HOME/traces.sqlite
    content: bool = True                   # False: --no-trace-content (messages, tool arguments/results dropped)
    retention: int = DEFAULT_RETENTION     # traces kept
    otlp_endpoint: str | None = None       # --otlp-endpoint: also send spans there (OTLP/HTTP)


class Tracing:
    """The installed tracer: spans go to SQLite and to every exporter."""

    def __init__(self, settings: TraceSettings) -> None:
        self.settings = settings
        self.store = TraceStore(settings.path)
        self.writer = SqliteTracer(self.store, settings.retention)
        self.exporters: list = []
        if settings.otlp_endpoint:
            from athanor.ops.otlp import OtlpExporter

            self.exporters.append(OtlpExporter(settings.otlp_endpoint))
        self._previous = None

    def on_end(self, span: tracing.Span) -> None:
        self.writer.on_end(span)
        for e in self.exporters:
            e.on_end(span)

    def flush(self) -> None:
        self.writer.flush()
        for e in self.exporters:
            e.flush()

    def install(self) -> Tracing:
        self._previous = tracing.install(self, content=self.settings.content)
        return self

    def stop(self) -> None:
        if tracing.installed() is self:
            tracing.install(self._previous)
        self.writer.close()
        for e in self.exporters:
            e.close()
        self.store.close()


def start_tracing(settings: TraceSettings | None = None) -> Tracing | None:
    """Install tracing per `settings` (default: on, SQLite under ATHANOR_HOME); None when disabled."""
    settings = settings or TraceSettings()
    return Tracing(settings).install() if settings.enabled else None
