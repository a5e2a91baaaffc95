"""The CLI's view of a running `athanor serve`: what `athanor ps` prints (loaded models, size, context, expiry).

Talks HTTP to the server (GET /api/ps), so it works against any athanor or Ollama server. Not for generation
clients (llm/openai_compat.py is the app-facing one).
"""

from __future__ import annotations

from datetime import datetime, timezone

from athanor.errors import AthanorError


def loaded_models(url: str = "http://127.0.0.1:11435", api_key: str | None = None, timeout: float = 5.0) -> list[dict]:
    """Rows for `athanor ps`: name, size (bytes), context (tokens), until (e.g. '4 minutes from now' / 'forever')."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        r = httpx.get(f"{url.rstrip('/')}/api/ps", headers=headers, timeout=timeout)
    except httpx.HTTPError as e:
        raise AthanorError(f"no server at {url} ({type(e).__name__}); start one with: athanor serve") from None
    if r.status_code != 200:
        raise AthanorError(f"{url}/api/ps answered {r.status_code}: {r.text[:200]}")
    return [{"name": m["name"], "size": m.get("size", 0), "context": m.get("context_length"),
             "until": _until(m.get("expires_at"))} for m in r.json().get("models", [])]


def _until(expires_at: str | None) -> str:
    if not expires_at or expires_at.startswith("9999"):
        return "forever"
    seconds = (datetime.fromisoformat(expires_at.replace("Z", "+00:00")) - datetime.now(timezone.utc)).total_seconds()
    if seconds < 90:
        return f"{max(0, round(seconds))} seconds from now"
    return f"{round(seconds / 60)} minutes from now"
