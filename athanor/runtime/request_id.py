"""One request id from the HTTP request through the engine to the trace.

serve/middleware.py takes `X-Request-Id` (or makes one) and sets it for the request's context (`enter_request`);
every engine request made on its behalf gets `new_request_id()`: that id plus a process-wide counter (n choices,
agent steps and a client that reuses its header all need distinct engine ids), so access log, engine request
and trace join on the prefix. Outside a request: a fresh random id.
Not for: generating ids of API objects (chatcmpl-..., run ids): those are the routes' business.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import uuid
from collections.abc import Iterator

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("athanor_request_id", default=None)
_counter = itertools.count(1)


def current_request_id() -> str | None:
    """The id of the HTTP request (or other unit of work) this code runs for, if one was set."""
    return _current.get()


def new_request_id() -> str:
    """A fresh engine request id: `<request id>.<n>` inside a request scope, else 32 random hex digits."""
    base = _current.get()
    return f"{base}.{next(_counter)}" if base else uuid.uuid4().hex


def enter_request(request_id: str) -> contextvars.Token:
    """From here on (and in tasks and worker threads started from here), code runs for `request_id`."""
    return _current.set(request_id)


def leave_request(token: contextvars.Token) -> None:
    _current.reset(token)


@contextlib.contextmanager
def request_scope(request_id: str) -> Iterator[str]:
    """Code in this block runs for `request_id`."""
    token = enter_request(request_id)
    try:
        yield request_id
    finally:
        leave_request(token)
