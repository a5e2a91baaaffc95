"""Persisted workflow runs: `$ATHANOR_HOME/workflows/runs.sqlite` (ATHANOR_HOME defaults to ~/.athanor).

One row per run (app, inputs, outputs, status, error, timings, steps, tokens) and one per node execution
(inputs, process data, outputs, status, error, elapsed time, iteration/loop scope), plus conversation
variables and message history per conversation for advanced-chat apps (the history feeds the llm nodes'
`memory`; older databases get the history column added when opened). `RunStore.observer()` is an engine
observer: it writes as events arrive, so a run is visible (status "running") while it is still going.
Not for: running anything (engine.py) or formatting for people (cli.py).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from athanor.workflow.errors import WorkflowError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY, app_name TEXT, app_mode TEXT, source TEXT, status TEXT, inputs TEXT, outputs TEXT,
  error TEXT, created_at REAL, finished_at REAL, elapsed_time REAL, total_steps INTEGER, total_tokens INTEGER,
  conversation_id TEXT, user_id TEXT);
CREATE TABLE IF NOT EXISTS node_executions (
  id TEXT PRIMARY KEY, run_id TEXT, node_id TEXT, node_type TEXT, title TEXT, idx INTEGER, status TEXT,
  inputs TEXT, process_data TEXT, outputs TEXT, error TEXT, elapsed_time REAL, created_at REAL,
  finished_at REAL, iteration_id TEXT, loop_id TEXT, execution_metadata TEXT);
CREATE INDEX IF NOT EXISTS node_exec_run ON node_executions(run_id, idx);
CREATE TABLE IF NOT EXISTS conversations (
  id TEXT PRIMARY KEY, app_name TEXT, variables TEXT, dialogue_count INTEGER, updated_at REAL, history TEXT);
"""
MAX_HISTORY_MESSAGES = 1000  # kept per conversation (500 turns: prompting.MAX_HISTORY_TURNS, Dify's limit)
_RUN_COLUMNS = ("id", "app_name", "app_mode", "source", "status", "inputs", "outputs", "error", "created_at",
                "finished_at", "elapsed_time", "total_steps", "total_tokens", "conversation_id", "user_id")
_JSON = ("inputs", "outputs", "process_data", "execution_metadata", "variables", "history")


def default_path() -> Path:
    from athanor.home import athanor_home

    return athanor_home() / "workflows" / "runs.sqlite"


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def open_db(path: str | Path | None, schema: str) -> tuple[Path, sqlite3.Connection, threading.Lock]:
    """The runs database (or `path`), opened the one way (sqlite_db.open_db)."""
    from athanor.sqlite_db import open_db as open_sqlite

    return open_sqlite(path or default_path(), schema)


class RunStore:
    """SQLite access, safe to share between threads (one connection, one lock)."""

    def __init__(self, path: str | Path | None = None):
        self.path, self._db, self._lock = open_db(path, _SCHEMA)
        with self._lock:
            columns = {r["name"] for r in self._db.execute("PRAGMA table_info(conversations)")}
            if "history" not in columns:  # a database written before conversations kept their messages
                try:
                    self._db.execute("ALTER TABLE conversations ADD COLUMN history TEXT")
                except sqlite3.OperationalError as e:  # another process added it between the two statements
                    if "duplicate column" not in str(e):
                        raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- writing (as events arrive) ---------------------------------------------------------------------

    def observer(self, app, user: str = "user"):
        """An engine observer that records this app's runs from their events."""

        def observe(event: dict) -> None:
            kind, data = event.get("event"), event.get("data") or {}
            if kind == "workflow_started":
                self._exec("INSERT OR REPLACE INTO runs (id, app_name, app_mode, source, status, inputs, created_at, "
                           "conversation_id, user_id) VALUES (?,?,?,?,?,?,?,?,?)",
                           (data["id"], app.name, app.mode, app.source, "running", _dumps(data.get("inputs")),
                            time.time(), event.get("conversation_id"), user))
            elif kind == "node_finished":
                self._exec("INSERT OR REPLACE INTO node_executions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                           (data["id"], event["workflow_run_id"], data["node_id"], data["node_type"], data["title"],
                            data.get("index"), data["status"], _dumps(data.get("inputs")),
                            _dumps(data.get("process_data")), _dumps(data.get("outputs")), data.get("error"),
                            data.get("elapsed_time"), data.get("created_at"), data.get("finished_at"),
                            data.get("iteration_id"), data.get("loop_id"), _dumps(data.get("execution_metadata"))))
            elif kind == "workflow_finished":
                self._exec("UPDATE runs SET status=?, outputs=?, error=?, finished_at=?, elapsed_time=?, "
                           "total_steps=?, total_tokens=? WHERE id=?",
                           (data["status"], _dumps(data.get("outputs")), data.get("error"), time.time(),
                            data.get("elapsed_time"), data.get("total_steps"), data.get("total_tokens"), data["id"]))

        return observe

    def _exec(self, sql: str, args: tuple) -> None:
        with self._lock:
            self._db.execute(sql, args)

    def save_conversation(self, conversation_id: str, app_name: str, variables: dict, dialogue_count: int,
                          history: list[dict] | None = None) -> None:
        self._exec("INSERT OR REPLACE INTO conversations (id, app_name, variables, dialogue_count, updated_at, "
                   "history) VALUES (?,?,?,?,?,?)",
                   (conversation_id, app_name, _dumps(variables), dialogue_count, time.time(),
                    _dumps(list(history or [])[-MAX_HISTORY_MESSAGES:])))

    def save_turn(self, app_name: str, result, query: str, dialogue_count: int, history: list[dict]) -> None:
        """After an advanced-chat turn: its conversation variables, and the history with this query and answer."""
        turn = [{"role": "user", "content": query}, {"role": "assistant", "content": result.answer}]
        self.save_conversation(result.conversation_id, app_name, result.conversation, dialogue_count,
                               [*history, *turn])

    # --- reading ----------------------------------------------------------------------------------------

    def conversation(self, conversation_id: str) -> dict | None:
        """{"variables": {...}, "history": [messages], "dialogue_count": n, "app_name": ...}; None for an unknown id."""
        with self._lock:
            row = self._db.execute("SELECT * FROM conversations WHERE id=?", (conversation_id,)).fetchone()
        if row is None:
            return None
        out = _row(row)
        out["history"] = out.get("history") or []
        return out

    def list_runs(self, limit: int = 20) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM runs ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
        return [_row(r) for r in rows]

    def get_run(self, run_id: str, prefix: bool = True) -> dict:
        """The run with its node executions in order; WorkflowError for an unknown id. `prefix`: a unique prefix
        works (the CLI's convenience; HTTP asks for the exact id, as Dify does)."""
        with self._lock:
            # matched literally: `%` and `_` in the id are characters, never LIKE patterns
            if prefix:
                rows = self._db.execute("SELECT * FROM runs WHERE substr(id, 1, length(?)) = ? LIMIT 2",
                                        (run_id, run_id)).fetchall()
            else:
                rows = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchall()
            if len(rows) != 1:
                raise WorkflowError(f"workflow run {run_id[:100]!r} not found" if not rows else
                                    f"workflow run id {run_id!r} is ambiguous; give more characters")
            run = _row(rows[0])
            nodes = self._db.execute("SELECT * FROM node_executions WHERE run_id=? ORDER BY idx",
                                     (run["id"],)).fetchall()
        run["node_executions"] = [_row(n) for n in nodes]
        return run


def _row(row: sqlite3.Row) -> dict:
    out = dict(row)
    for key in _JSON:
        if isinstance(out.get(key), str):
            out[key] = json.loads(out[key])
    return out
