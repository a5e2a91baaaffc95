"""Traces on disk: `$ATHANOR_HOME/traces.sqlite`, written off the request path, read by the CLI, HTTP and evals.

`TraceStore` owns the database: spans (one row each, attributes as JSON), traces (one row per trace, summed from
its spans when they arrive: name, model, times, tokens, error) and feedback (any number per trace, newest wins in
listings). `SqliteTracer` is the tracer ops installs (athanor/tracing.py): `on_end` only queues the span; one
writer thread inserts in batches and prunes the oldest traces past `retention` (a count of traces).
Not for: making spans (tracing.py and the rooms that report), exporting datasets (datasets.py) or OTLP (otlp.py).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path
from typing import Any

from athanor import tracing
from athanor.sqlite_db import open_db

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
  span_id TEXT PRIMARY KEY, trace_id TEXT, parent_id TEXT, name TEXT, kind TEXT, start REAL, end_time REAL,
  status TEXT, error TEXT, attributes TEXT);
CREATE INDEX IF NOT EXISTS spans_trace ON spans(trace_id, start);
CREATE TABLE IF NOT EXISTS traces (
  trace_id TEXT PRIMARY KEY, name TEXT, kind TEXT, model TEXT, start REAL, end_time REAL, status TEXT,
  error TEXT, input_tokens INTEGER DEFAULT 0, output_tokens INTEGER DEFAULT 0, spans INTEGER DEFAULT 0,
  root_span_id TEXT, request_id TEXT, held_out INTEGER DEFAULT 0);
CREATE INDEX IF NOT EXISTS traces_start ON traces(start);
CREATE TABLE IF NOT EXISTS feedback (
  id INTEGER PRIMARY KEY AUTOINCREMENT, trace_id TEXT, score REAL, comment TEXT, correction TEXT, source TEXT,
  created REAL);
CREATE INDEX IF NOT EXISTS feedback_trace ON feedback(trace_id, id);
"""
DEFAULT_RETENTION = 100_000  # traces kept; older ones (and their spans and feedback) are pruned
MODEL_KINDS = ("llm", "embedding")  # spans whose tokens and model a trace's row sums
FEEDBACK_FILTERS = ("good", "bad", "none", "any")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str | float | None, now: float | None = None) -> float | None:
    """`since` as the CLI and HTTP take it: seconds ("3600") or a span ("30m", "1h", "2d") back from now -> the
    epoch time it starts at; ValueError for anything else."""
    if text is None or text == "":
        return None
    raw = str(text).strip().lower()
    unit = raw[-1] if raw and raw[-1] in _UNITS else "s"
    number = raw[:-1] if raw and raw[-1] in _UNITS else raw
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError:
        raise ValueError(f"since must be seconds or a span like 30m, 1h, 2d; got {text!r}") from None
    if not 0 <= seconds < 1e10:  # also refuses nan and inf
        raise ValueError(f"since must be a positive span below 300 years, got {text!r}")
    return (time.time() if now is None else now) - seconds


def parse_score(value) -> float:
    """A feedback score: a number in -1..1, or "good" (1) / "bad" (-1); ValueError otherwise."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("good", "bad"):
            return 1.0 if word == "good" else -1.0
        try:
            value = float(word)
        except ValueError:
            raise ValueError(f"score must be a number in -1..1 or 'good'/'bad', got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1.0 <= value <= 1.0:
        raise ValueError(f"score must be a number in -1..1 or 'good'/'bad', got {value!r}")
    return float(value)


def default_path() -> Path:
    from athanor.home import athanor_home

    return athanor_home() / "traces.sqlite"


def _loads(text: str | None) -> Any:
    return json.loads(text) if text else {}


class TraceStore:
    """SQLite access, safe to share between threads (one connection, one lock)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path, self._db, self._lock = open_db(path or default_path(), _SCHEMA)
        with self._lock:  # WAL without a sync per commit: a crash may lose the last traces, never corrupt the file
            self._db.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- writing ---------------------------------------------------------------------------------------

    def write_spans(self, spans: list[tracing.Span]) -> None:
        """Insert ended spans and fold them into their traces' rows (one transaction)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for s in spans:
                    self._write(s)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _write(self, s: tracing.Span) -> None:
        a = s.attributes
        self._db.execute("INSERT OR REPLACE INTO spans VALUES (?,?,?,?,?,?,?,?,?,?)",
                         (s.span_id, s.trace_id, s.parent_id, s.name, s.kind, s.start, s.end_time, s.status,
                          s.error, json.dumps(a, default=str)))
        call = s.kind in MODEL_KINDS
        inp = int(a.get(tracing.INPUT_TOKENS) or 0) if call else 0
        out = int(a.get(tracing.OUTPUT_TOKENS) or 0) if call else 0
        model = a.get(tracing.REQUEST_MODEL) if call else None
        self._db.execute(
            "INSERT INTO traces (trace_id, name, kind, model, start, end_time, status, error, input_tokens, "
            "output_tokens, spans) VALUES (?,?,?,?,?,?,?,?,?,?,1) ON CONFLICT(trace_id) DO UPDATE SET "
            "start=min(start, excluded.start), end_time=max(coalesce(end_time, 0), excluded.end_time), "
            "model=coalesce(model, excluded.model), input_tokens=input_tokens+excluded.input_tokens, "
            "output_tokens=output_tokens+excluded.output_tokens, spans=spans+1, "
            "status=CASE WHEN excluded.status='error' THEN 'error' ELSE status END, "
            "error=coalesce(error, excluded.error)",
            (s.trace_id, s.name, s.kind, model, s.start, s.end_time, s.status, s.error, inp, out))
        if s.root:  # the first span of this process in the trace (its parent, if any, is remote): names it
            self._db.execute("UPDATE traces SET name=?, kind=?, root_span_id=?, request_id=? WHERE trace_id=?",
                             (s.name, s.kind, s.span_id, a.get(tracing.REQUEST_ID), s.trace_id))

    def prune(self, keep: int) -> int:
        """Drop the oldest traces past `keep`, with their spans and feedback; -> how many traces went."""
        with self._lock:
            cut = self._db.execute("SELECT start FROM traces ORDER BY start DESC LIMIT 1 OFFSET ?",
                                   (keep,)).fetchone()
            if cut is None:
                return 0
            old = [r[0] for r in self._db.execute("SELECT trace_id FROM traces WHERE start<=?", (cut[0],))]
            self._db.execute("BEGIN")
            for table in ("spans", "feedback", "traces"):
                self._db.executemany(f"DELETE FROM {table} WHERE trace_id=?", [(t,) for t in old])
            self._db.execute("COMMIT")
            return len(old)

    def resolve(self, prefix: str) -> str | None:
        """The one stored trace id starting with `prefix` (a full id or its first characters); None when none;
        ValueError when several match."""
        prefix = prefix.strip().lower()
        if not prefix or any(c not in "0123456789abcdef" for c in prefix):
            return None
        with self._lock:
            rows = self._db.execute("SELECT trace_id FROM traces WHERE trace_id >= ? AND trace_id < ? LIMIT 2",
                                    (prefix, prefix + "g")).fetchall()
        if len(rows) > 1:
            raise ValueError(f"trace id prefix {prefix!r} matches several traces: give more characters")
        return rows[0][0] if rows else None

    def add_feedback(self, trace_id: str, score: float, comment: str | None = None, correction: str | None = None,
                     source: str = "user") -> dict:
        """Attach a verdict (-1..1) to a trace; KeyError when no such trace is stored."""
        if not -1.0 <= score <= 1.0:
            raise ValueError(f"score must be between -1 and 1, got {score}")
        with self._lock:
            if not self._db.execute("SELECT 1 FROM traces WHERE trace_id=?", (trace_id,)).fetchone():
                raise KeyError(trace_id)
            now = time.time()
            cur = self._db.execute("INSERT INTO feedback (trace_id, score, comment, correction, source, created) "
                                   "VALUES (?,?,?,?,?,?)", (trace_id, score, comment, correction, source, now))
            return {"id": cur.lastrowid, "trace_id": trace_id, "score": score, "comment": comment,
                    "correction": correction, "source": source, "created": now}

    def set_held_out(self, trace_ids: list[str], held_out: bool = True) -> None:
        """Mark traces as an eval's held-out items: dataset export skips them."""
        with self._lock:
            self._db.executemany("UPDATE traces SET held_out=? WHERE trace_id=?",
                                 [(int(held_out), t) for t in trace_ids])

    # --- reading ---------------------------------------------------------------------------------------

    def list(self, model: str | None = None, since: float | None = None, feedback: str | None = None,
             errors: bool = False, limit: int = 100, offset: int = 0, name: str | None = None) -> list[dict]:
        """Newest first. feedback: good (latest score > 0), bad (< 0), none (no feedback), any (some)."""
        where, args = [], []
        if model:
            where.append("t.model=?")
            args.append(model)
        if since is not None:
            where.append("t.start>=?")
            args.append(since)
        if errors:
            where.append("t.status='error'")
        if name:
            where.append("t.name LIKE ?")
            args.append(f"%{name}%")
        latest = "(SELECT score FROM feedback f WHERE f.trace_id=t.trace_id ORDER BY f.id DESC LIMIT 1)"
        cond = {"good": f"{latest} > 0", "bad": f"{latest} < 0", "none": f"{latest} IS NULL",
                "any": f"{latest} IS NOT NULL", None: None}
        if feedback not in cond:
            raise ValueError(f"feedback filter must be good, bad, none or any, got {feedback!r}")
        if cond[feedback]:
            where.append(cond[feedback])
        sql = (f"SELECT t.*, {latest} AS score FROM traces t" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY t.start DESC LIMIT ? OFFSET ?")
        with self._lock:
            rows = self._db.execute(sql, [*args, limit, offset]).fetchall()
        return [self._trace_row(r) for r in rows]

    def get(self, trace_id: str) -> dict | None:
        """The trace with its spans (start order) and feedback; None when unknown."""
        with self._lock:
            row = self._db.execute("SELECT t.*, (SELECT score FROM feedback f WHERE f.trace_id=t.trace_id ORDER BY "
                                   "f.id DESC LIMIT 1) AS score FROM traces t WHERE trace_id=?",
                                   (trace_id,)).fetchone()
            if row is None:
                return None
            spans = self._db.execute("SELECT * FROM spans WHERE trace_id=? ORDER BY start, end_time",
                                     (trace_id,)).fetchall()
            fb = self._db.execute("SELECT * FROM feedback WHERE trace_id=? ORDER BY id", (trace_id,)).fetchall()
        out = self._trace_row(row)
        out["spans"] = [dict(r) | {"attributes": _loads(r["attributes"])} for r in spans]
        out["feedback"] = [dict(r) for r in fb]
        return out

    def feedback(self, trace_id: str) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self._db.execute("SELECT * FROM feedback WHERE trace_id=? ORDER BY id",
                                                      (trace_id,))]

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM traces").fetchone()[0]

    @staticmethod
    def _trace_row(r) -> dict:
        d = dict(r)
        d["duration"] = (d["end_time"] - d["start"]) if d.get("end_time") and d.get("start") else None
        d["held_out"] = bool(d.get("held_out"))
        return d


class SqliteTracer:
    """The tracer `athanor serve` (and CLI runs with tracing on) install: queue on the caller's thread, write on one
    background thread in batches; `flush()` waits until everything queued so far is on disk."""

    def __init__(self, store: TraceStore, retention: int = DEFAULT_RETENTION, batch: int = 256,
                 linger: float = 0.05) -> None:
        self.store, self.retention, self.batch, self.linger = store, retention, batch, linger
        self._queue: queue.Queue = queue.Queue()
        self._written = 0  # spans written since the last prune
        self._thread = threading.Thread(target=self._run, name="athanor-traces", daemon=True)
        self._thread.start()

    def on_end(self, span: tracing.Span) -> None:
        self._queue.put(span)

    def flush(self, timeout: float = 10.0) -> None:
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _next_batch(self) -> list:
        """Wait for one item, then gather more for up to `linger` seconds (fewer, larger transactions: the writer
        takes the GIL a few times per batch, not per span); a flush or close ends the wait at once."""
        items = [self._queue.get()]
        deadline = time.monotonic() + self.linger
        while len(items) < self.batch and isinstance(items[-1], tracing.Span):
            try:
                items.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return items

    def _run(self) -> None:
        import logging

        log = logging.getLogger("athanor.ops")
        while True:
            items = self._next_batch()
            spans = [i for i in items if isinstance(i, tracing.Span)]
            flushing = any(isinstance(i, threading.Event) for i in items)
            try:
                if spans:
                    self.store.write_spans(spans)
                    self._written += len(spans)
                # every 1000 spans, and at a flush (so readers after flush() never see more than `retention`)
                if self._written >= 1000 or (flushing and self._written):
                    self._written = 0
                    self.store.prune(self.retention)
            except Exception:
                log.exception("could not write %d span(s) to %s", len(spans), self.store.path)
            for i in items:
                if isinstance(i, threading.Event):
                    i.set()
            if any(i is None for i in items):
                return
