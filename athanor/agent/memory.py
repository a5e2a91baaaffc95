"""Conversation memory for agents: buffer, window (last k turns), token-limited summary; SQLite sessions.

Every memory keeps the full message log in a store and shows the model a view of it:
- `BufferMemory`: every message;
- `WindowMemory(k)`: the last k turns (a turn starts at a user message);
- `SummaryMemory(model, max_tokens)`: the newest messages that fit in `max_tokens`, preceded by a running
  summary (written by the model) of everything older. The summary and how many messages it covers are stored
  too, so a restarted process does not re-summarize.
Stores: `InMemoryStore` (this process only) and `SQLiteStore(path, session_id)` (a new process with the same
session id continues the conversation). Token counts default to a ~4 characters/token estimate; pass the
model's tokenizer length function for exact counts.
Not for: vector/semantic memory (rag/), or tool results of the current run (the agent's scratchpad).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from athanor.llm.base import ChatModel


class MessageStore(Protocol):
    def load(self) -> list[dict]: ...
    def append(self, message: dict) -> None: ...
    def get_summary(self) -> tuple[str, int]: ...
    def set_summary(self, text: str, num_messages: int) -> None: ...
    def clear(self) -> None: ...


class InMemoryStore:
    def __init__(self) -> None:
        self._messages: list[dict] = []
        self._summary = ("", 0)

    def load(self) -> list[dict]:
        return list(self._messages)

    def append(self, message: dict) -> None:
        self._messages.append(dict(message))

    def get_summary(self) -> tuple[str, int]:
        return self._summary

    def set_summary(self, text: str, num_messages: int) -> None:
        self._summary = (text, num_messages)

    def clear(self) -> None:
        self._messages, self._summary = [], ("", 0)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (session_id TEXT NOT NULL, seq INTEGER NOT NULL, message TEXT NOT NULL,
                                     PRIMARY KEY (session_id, seq));
CREATE TABLE IF NOT EXISTS summaries (session_id TEXT PRIMARY KEY, summary TEXT NOT NULL, num_messages INTEGER NOT NULL);
"""


def default_sessions_path() -> Path:
    """$ATHANOR_HOME/agent/sessions.sqlite (ATHANOR_HOME defaults to ~/.athanor)."""
    from athanor.home import athanor_home

    return athanor_home() / "agent" / "sessions.sqlite"


class SQLiteStore:
    """One session's messages in a SQLite file; each call opens its own short transaction (safe across processes)."""

    def __init__(self, session_id: str, path: str | Path | None = None) -> None:
        if not session_id:
            raise ValueError("session id must be a non-empty string")
        self.session_id, self.path = session_id, Path(path) if path else default_sessions_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def load(self) -> list[dict]:
        with self._connect() as db:
            rows = db.execute("SELECT message FROM messages WHERE session_id = ? ORDER BY seq", (self.session_id,))
            return [json.loads(r[0]) for r in rows]

    def append(self, message: dict) -> None:
        with self._connect() as db:  # seq computed inside the insert: two writers cannot take the same one
            db.execute("INSERT INTO messages (session_id, seq, message) SELECT ?, COALESCE(MAX(seq), -1) + 1, ? "
                       "FROM messages WHERE session_id = ?", (self.session_id, json.dumps(message), self.session_id))

    def get_summary(self) -> tuple[str, int]:
        with self._connect() as db:
            row = db.execute("SELECT summary, num_messages FROM summaries WHERE session_id = ?",
                             (self.session_id,)).fetchone()
        return (row[0], row[1]) if row else ("", 0)

    def set_summary(self, text: str, num_messages: int) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO summaries VALUES (?, ?, ?)", (self.session_id, text, num_messages))

    def clear(self) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM messages WHERE session_id = ?", (self.session_id,))
            db.execute("DELETE FROM summaries WHERE session_id = ?", (self.session_id,))


class BufferMemory:
    def __init__(self, store: MessageStore | None = None) -> None:
        self.store = store if store is not None else InMemoryStore()

    def add(self, message: dict) -> None:
        self.store.append(message)

    def messages(self) -> list[dict]:
        return self.store.load()

    def clear(self) -> None:
        self.store.clear()


class WindowMemory(BufferMemory):
    def __init__(self, k: int = 5, store: MessageStore | None = None) -> None:
        if k < 1:
            raise ValueError(f"window size k must be >= 1, got {k}")
        super().__init__(store)
        self.k = k

    def messages(self) -> list[dict]:
        log = self.store.load()
        starts = [i for i, m in enumerate(log) if m.get("role") == "user"]
        return log[starts[-self.k]:] if len(starts) >= self.k else log


def estimate_tokens(text: str) -> int:
    return len(text) // 4 + 1


SUMMARY_PROMPT = ("Progressively summarize the conversation, adding onto the previous summary. Keep names, numbers "
                  "and decisions. Reply with the new summary only.\n\nCurrent summary:\n{summary}\n\n"
                  "New lines of conversation:\n{lines}\n\nNew summary:")


class SummaryMemory(BufferMemory):
    def __init__(self, model: ChatModel, max_tokens: int = 1000, store: MessageStore | None = None,
                 count_tokens: Callable[[str], int] = estimate_tokens) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        super().__init__(store)
        self.model, self.max_tokens, self.count_tokens = model, max_tokens, count_tokens

    def messages(self) -> list[dict]:
        """[summary of older messages as a system message] + the newest messages within max_tokens."""
        log = self.store.load()
        summary, covered = self.store.get_summary()
        keep = self._newest_that_fit(log[covered:])
        if len(log) - keep > covered:  # messages fell out of the window: fold them into the summary
            summary = self._summarize(summary, log[covered:len(log) - keep])
            covered = len(log) - keep
            self.store.set_summary(summary, covered)
        head = [{"role": "system", "content": f"Summary of the earlier conversation: {summary}"}] if summary else []
        return head + log[covered:]

    def _newest_that_fit(self, messages: list[dict]) -> int:
        total, n = 0, 0
        for m in reversed(messages):
            total += self.count_tokens(m.get("content") or "")
            if total > self.max_tokens:
                break
            n += 1
        return n

    def _summarize(self, summary: str, messages: list[dict]) -> str:
        lines = "\n".join(f"{m['role']}: {m.get('content') or ''}" for m in messages)
        prompt = SUMMARY_PROMPT.format(summary=summary or "(none)", lines=lines)
        return self.model.chat([{"role": "user", "content": prompt}], temperature=0.0, max_tokens=256).text.strip()
