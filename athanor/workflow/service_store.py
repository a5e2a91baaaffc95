"""What Dify's service API keeps besides runs: app keys, chat messages, conversation names, uploaded files.

Tables in the runs database (`$ATHANOR_HOME/workflows/runs.sqlite`, beside runs.py's):

    app_keys       key -> app name (one key per app, `athanor workflow import FILE --name NAME` makes it)
    messages       one row per chat / completion message: conversation, user, query, answer, inputs, feedback
    conversations_meta  per conversation: app, end user, name, inputs, created / updated (runs.py keeps the
                   variables and the history the model sees)
    uploads        files sent to /v1/files/upload, stored under $ATHANOR_HOME/workflows/uploads/

`install_app` copies a DSL file into the apps folder (`apps_dir`) after checking that it loads.
Not for: HTTP (dify_api.py) or runs and node executions (runs.py).
"""

from __future__ import annotations

import secrets
import shutil
import time
import uuid
from pathlib import Path

from athanor.errors import AthanorError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS app_keys (key TEXT PRIMARY KEY, app_name TEXT UNIQUE, created_at REAL);
CREATE TABLE IF NOT EXISTS messages (
  id TEXT PRIMARY KEY, app_name TEXT, conversation_id TEXT, user_id TEXT, query TEXT, answer TEXT, inputs TEXT,
  status TEXT, error TEXT, run_id TEXT, feedback TEXT, created_at REAL);
CREATE INDEX IF NOT EXISTS messages_conv ON messages(conversation_id, created_at);
CREATE TABLE IF NOT EXISTS conversations_meta (
  id TEXT PRIMARY KEY, app_name TEXT, user_id TEXT, name TEXT, inputs TEXT, created_at REAL, updated_at REAL);
CREATE INDEX IF NOT EXISTS conv_meta_user ON conversations_meta(app_name, user_id, updated_at);
CREATE TABLE IF NOT EXISTS uploads (
  id TEXT PRIMARY KEY, app_name TEXT, user_id TEXT, name TEXT, size INTEGER, extension TEXT, mime_type TEXT,
  path TEXT, created_at REAL);
"""


def _home() -> Path:
    from athanor.workflow.runs import default_path

    return default_path().parent


def apps_dir() -> Path:
    """Installed Dify apps: `$ATHANOR_HOME/workflows/apps/NAME.yml`."""
    return _home() / "apps"


def uploads_dir() -> Path:
    return _home() / "uploads"


class ServiceStore:
    """SQLite access shared by threads (one connection, one lock), like runs.RunStore."""

    def __init__(self, path: str | Path | None = None):
        from athanor.workflow.runs import open_db

        self.path, self._db, self._lock = open_db(path, _SCHEMA)

    def _rows(self, sql: str, args: tuple = ()) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, args).fetchall()]

    def _exec(self, sql: str, args: tuple = ()) -> None:
        with self._lock:
            self._db.execute(sql, args)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- app keys ---------------------------------------------------------------------------------------

    def key_for(self, app_name: str, *, create: bool = True) -> str | None:
        rows = self._rows("SELECT key FROM app_keys WHERE app_name=?", (app_name,))
        if rows or not create:
            return rows[0]["key"] if rows else None
        key = "app-" + secrets.token_urlsafe(24)
        self._exec("INSERT INTO app_keys VALUES (?,?,?)", (key, app_name, time.time()))
        return key

    def app_for_key(self, key: str) -> str | None:
        if not key or not key.startswith("app-"):
            return None
        rows = self._rows("SELECT app_name FROM app_keys WHERE key=?", (key,))
        return rows[0]["app_name"] if rows else None

    def list_keys(self) -> list[dict]:
        return self._rows("SELECT app_name, key, created_at FROM app_keys ORDER BY app_name")

    # --- conversations and messages -------------------------------------------------------------------------

    def touch_conversation(self, conversation_id: str, app_name: str, user: str, inputs: dict, name: str) -> None:
        now = time.time()
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO conversations_meta VALUES (?,?,?,?,?,?,?)",
                             (conversation_id, app_name, user, name, _dumps(inputs), now, now))
            self._db.execute("UPDATE conversations_meta SET updated_at=? WHERE id=?", (now, conversation_id))

    def conversation_meta(self, conversation_id: str) -> dict | None:
        rows = self._rows("SELECT * FROM conversations_meta WHERE id=?", (conversation_id,))
        return _decode(rows[0]) if rows else None

    def conversations(self, app_name: str, user: str, last_id: str | None, limit: int) -> tuple[list[dict], bool]:
        """A user's conversations with an app, most recently updated first, after `last_id`."""
        rows = self._rows("SELECT * FROM conversations_meta WHERE app_name=? AND user_id=? ORDER BY updated_at DESC, "
                          "id", (app_name, user))
        if last_id:
            ids = [r["id"] for r in rows]
            rows = rows[ids.index(last_id) + 1:] if last_id in ids else []
        return [_decode(r) for r in rows[:limit]], len(rows) > limit

    def rename(self, conversation_id: str, name: str) -> None:
        self._exec("UPDATE conversations_meta SET name=?, updated_at=? WHERE id=?", (name, time.time(), conversation_id))

    def delete_conversation(self, conversation_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM conversations_meta WHERE id=?", (conversation_id,))
            self._db.execute("DELETE FROM messages WHERE conversation_id=?", (conversation_id,))
            self._db.execute("DELETE FROM conversations WHERE id=?", (conversation_id,))

    def add_message(self, message_id: str, app_name: str, conversation_id: str | None, user: str, query: str,
                    answer: str, inputs: dict, status: str, error: str | None, run_id: str) -> None:
        self._exec("INSERT OR REPLACE INTO messages VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                   (message_id, app_name, conversation_id, user, query, answer, _dumps(inputs), status, error, run_id,
                    None, time.time()))

    def messages(self, conversation_id: str, first_id: str | None, limit: int) -> tuple[list[dict], bool]:
        """Messages of a conversation, oldest first: the `limit` messages before `first_id` (or the newest)."""
        rows = self._rows("SELECT * FROM messages WHERE conversation_id=? ORDER BY created_at", (conversation_id,))
        if first_id:
            ids = [r["id"] for r in rows]
            rows = rows[:ids.index(first_id)] if first_id in ids else []
        return [_decode(r) for r in rows[-limit:]], len(rows) > limit

    def message(self, message_id: str) -> dict | None:
        rows = self._rows("SELECT * FROM messages WHERE id=?", (message_id,))
        return _decode(rows[0]) if rows else None

    def set_feedback(self, message_id: str, rating: str | None) -> None:
        self._exec("UPDATE messages SET feedback=? WHERE id=?", (rating, message_id))

    # --- uploads ----------------------------------------------------------------------------------------

    def add_upload(self, app_name: str, user: str, name: str, data: bytes, mime_type: str) -> dict:
        upload_id = str(uuid.uuid4())
        extension = Path(name).suffix.lower().lstrip(".")[:16]
        folder = uploads_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (upload_id + (f".{extension}" if extension.isalnum() else ""))
        path.write_bytes(data)
        row = {"id": upload_id, "app_name": app_name, "user_id": user, "name": name, "size": len(data),
               "extension": extension, "mime_type": mime_type, "path": str(path), "created_at": time.time()}
        self._exec("INSERT INTO uploads VALUES (?,?,?,?,?,?,?,?,?)", tuple(row.values()))
        return row

    def upload(self, upload_id: str) -> dict | None:
        rows = self._rows("SELECT * FROM uploads WHERE id=?", (str(upload_id),))
        return rows[0] if rows else None


def _dumps(value) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, default=str)


def _decode(row: dict) -> dict:
    import json

    if isinstance(row.get("inputs"), str):
        try:
            row["inputs"] = json.loads(row["inputs"])
        except json.JSONDecodeError:
            row["inputs"] = {}
    return row


def install_app(file: Path, name: str | None = None, force: bool = False) -> tuple[str, Path]:
    """Copy a DSL file into the apps folder (it must load) -> (its app key, the installed path)."""
    from athanor.workflow.dsl import load_app

    app = load_app(Path(file))
    name = (name or Path(file).stem).strip()
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise AthanorError(f"app name {name!r}: use letters, digits, '-', '_' and '.'")
    folder = apps_dir()
    folder.mkdir(parents=True, exist_ok=True)
    existing = [p for p in folder.glob(f"{name}.*") if p.suffix in (".yml", ".yaml", ".json")]
    if existing and not force:
        same = existing[0].read_bytes() == Path(file).read_bytes()
        if not same:
            raise AthanorError(f"app {name!r} is already installed ({existing[0]}); pass --force to replace it")
    for p in existing:
        p.unlink()
    target = folder / f"{name}{Path(file).suffix if Path(file).suffix in ('.yml', '.yaml', '.json') else '.yml'}"
    shutil.copyfile(file, target)
    del app
    return ServiceStore().key_for(name), target
