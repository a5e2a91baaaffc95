"""Eval runs on disk: `$ATHANOR_HOME/evals.sqlite`, one row per run and one per scored item.

A run records what was measured (model name and digest, data file and its sha256, scorer, options), the result
(n, correct, accuracy and its 95% interval) and timing; each item keeps its input (and a hash of it, which is how
`eval compare` pairs items of two runs), ideal, output, verdict, detail and the id of the trace it produced.
lm-eval task runs are stored too (kind "lm-eval", their metrics in `meta`, items one per document when logged).
Not for: running or scoring (evals.py, scorers.py) or comparing runs (compare.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from athanor.sqlite_db import open_db

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, kind TEXT, model TEXT, model_digest TEXT, data TEXT, data_sha256 TEXT, scorer TEXT,
  options TEXT, n INTEGER, correct INTEGER, accuracy REAL, ci_low REAL, ci_high REAL, held_out INTEGER,
  created REAL, duration REAL, meta TEXT);
CREATE INDEX IF NOT EXISTS runs_created ON runs(created);
CREATE TABLE IF NOT EXISTS items (
  run_id TEXT, idx INTEGER, input_hash TEXT, input TEXT, ideal TEXT, output TEXT, correct INTEGER, detail TEXT,
  trace_id TEXT, held_out INTEGER, latency REAL, PRIMARY KEY (run_id, idx));
"""
_RUN_COLUMNS = ("run_id", "kind", "model", "model_digest", "data", "data_sha256", "scorer", "options", "n",
                "correct", "accuracy", "ci_low", "ci_high", "held_out", "created", "duration", "meta")
_JSON_RUN = ("options", "meta")


def default_path() -> Path:
    from athanor.home import athanor_home

    return athanor_home() / "evals.sqlite"


def new_run_id() -> str:
    return "eval-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + os.urandom(3).hex()


def input_hash(value: Any) -> str:
    """A stable hash of an item's input (messages, tools): canonical JSON, sha256, 16 hex digits."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class EvalStore:
    """SQLite access to eval runs, safe to share between threads."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path, self._db, self._lock = open_db(path or default_path(), _SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> EvalStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def save(self, run: dict) -> str:
        """Store a run dict (the shape run_eval returns) with its items; -> its run_id. Replaces a same-id run."""
        row = [run.get(c) for c in _RUN_COLUMNS]
        for c in _JSON_RUN:
            row[_RUN_COLUMNS.index(c)] = json.dumps(run.get(c) or {}, default=str)
        row[_RUN_COLUMNS.index("held_out")] = int(bool(run.get("held_out")))
        items = [(run["run_id"], it["index"], it.get("input_hash") or input_hash(it.get("input")),
                  json.dumps(it.get("input"), default=str), json.dumps(it.get("ideal"), default=str),
                  it.get("output"), int(bool(it["correct"])), it.get("detail"), it.get("trace_id"),
                  int(bool(it.get("held_out"))), it.get("latency")) for it in run.get("items", [])]
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute("DELETE FROM items WHERE run_id=?", (run["run_id"],))
                self._db.execute(f"INSERT OR REPLACE INTO runs VALUES ({','.join('?' * len(row))})", row)
                self._db.executemany("INSERT INTO items VALUES (?,?,?,?,?,?,?,?,?,?,?)", items)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return run["run_id"]

    def get(self, run_id: str) -> dict | None:
        """The run with its items (index order); None when unknown."""
        with self._lock:
            row = self._db.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if row is None:
                return None
            items = self._db.execute("SELECT * FROM items WHERE run_id=? ORDER BY idx", (run_id,)).fetchall()
        run = self._run_row(row)
        run["items"] = [_item_row(r) for r in items]
        return run

    def list(self, limit: int = 100, offset: int = 0, model: str | None = None) -> list[dict]:
        """Run summaries (no items), newest first."""
        sql = "SELECT * FROM runs" + (" WHERE model=?" if model else "") + " ORDER BY created DESC LIMIT ? OFFSET ?"
        args = ([model] if model else []) + [limit, offset]
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [self._run_row(r) for r in rows]

    @staticmethod
    def _run_row(r) -> dict:
        d = dict(r)
        for c in _JSON_RUN:
            d[c] = json.loads(d[c]) if d.get(c) else {}
        d["held_out"] = bool(d.get("held_out"))
        return d


def _item_row(r) -> dict:
    d = dict(r)
    return {"index": d["idx"], "input": json.loads(d["input"]) if d["input"] else None,
            "ideal": json.loads(d["ideal"]) if d["ideal"] else None, "output": d["output"],
            "correct": bool(d["correct"]), "detail": d["detail"], "trace_id": d["trace_id"],
            "held_out": bool(d["held_out"]), "input_hash": d["input_hash"], "latency": d["latency"]}
