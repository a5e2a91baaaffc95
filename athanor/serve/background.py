"""Run an ASGI app on 127.0.0.1 in a background thread: for tests, benchmarks and notebooks.

Not for production serving (`athanor serve` runs uvicorn in the foreground with signal handling).
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def serve_in_thread(app, start_timeout: float = 20.0, stop_timeout: float = 30.0) -> Iterator[tuple[str, object]]:
    """Yields (base URL "http://127.0.0.1:PORT", the uvicorn.Server); stops the server on exit."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # a free port, held by us until uvicorn takes the socket
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", server
    finally:
        server.should_exit = True
        thread.join(timeout=stop_timeout)
        sock.close()
