"""One way to open an athanor SQLite database: WAL, rows as sqlite3.Row, schema applied, one connection shared by
threads under one lock (workflow runs and services, traces, feedback and evals).

Not for: what goes in each database (the rooms that own them).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path


def open_db(path: str | Path, schema: str) -> tuple[Path, sqlite3.Connection, threading.Lock]:
    """(path, connection, lock) for the database at `path` (its folder is made) with `schema` applied."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
    db.row_factory = sqlite3.Row
    lock = threading.Lock()
    with lock:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(schema)
    return path, db, lock
