"""MCP: load the tools of an MCP server (stdio command or streamable-HTTP URL) as ordinary `Tool`s.

`MCPServerTools("python my_server.py")` or `MCPServerTools("http://127.0.0.1:8000/mcp")`, used as a context
manager, connects with the `mcp` SDK's `Client`, lists the server's tools and returns `MCPTool`s whose
`call()` is synchronous, so every agent uses them like the built-ins. The SDK is async: one background thread
runs an event loop that owns the connection for its whole life (anyio needs the same task to open and close
it); calls from any thread are handed to that loop. A tool result with `is_error` raises `ToolError`, so the
model reads the server's message as its Observation.
Not for: MCP resources, prompts, sampling or elicitation (tools only), or serving athanor's tools over MCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import threading
from dataclasses import dataclass
from typing import Any

from athanor.agent.tools import ToolError, check_arguments
from athanor.errors import AthanorError


class MCPConnectionError(AthanorError):
    """An MCP server could not be started, reached or listed (one line, the innermost cause)."""


@dataclass
class MCPTool:
    name: str
    description: str
    parameters: dict
    connection: MCPServerTools

    def call(self, arguments: dict) -> str:
        return self.connection.call_tool(self.name, check_arguments(self, arguments))


class MCPServerTools:
    def __init__(self, server: str | list[str], *, timeout_s: float = 60.0, env: dict[str, str] | None = None) -> None:
        """`server`: an http(s) URL (streamable HTTP) or a command line (a string, split like a shell; or a list)."""
        if not server:
            raise ValueError("empty MCP server; give a command line or an http(s) URL")
        self.server, self.timeout_s, self.env = server, timeout_s, env
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self.tools: list[MCPTool] = []

    # --- lifecycle -----------------------------------------------------------------------------------------

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> list[MCPTool]:
        """Connect, list the tools; raises what the SDK raised if the server cannot be reached."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mcp-client", daemon=True)
        self._thread.start()
        ready = asyncio.run_coroutine_threadsafe(self._open(), self._loop)
        try:
            listed = ready.result(timeout=self.timeout_s)
        except BaseException as e:
            self.close()
            cause = _innermost(e)
            raise MCPConnectionError(f"cannot connect to MCP server {self.server!r}: "
                                     f"{type(cause).__name__}: {cause}".splitlines()[0]) from e
        self.tools = [MCPTool(t.name, t.description or t.name, t.input_schema or {"type": "object"}, self)
                      for t in listed]
        return self.tools

    def close(self) -> None:
        if self._loop is None:
            return
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._session_task is not None:
            wait = asyncio.wait_for(asyncio.shield(self._session_task), self.timeout_s)
            with contextlib.suppress(Exception):  # closing: the server may already be gone
                asyncio.run_coroutine_threadsafe(wait, self._loop).result(timeout=self.timeout_s + 5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop, self._client, self._stop, self._session_task = None, None, None, None

    _session_task: asyncio.Task | None = None

    async def _open(self):
        """Start the task that owns the connection; return the tool list once it is connected."""
        self._stop = asyncio.Event()
        connected: asyncio.Future = asyncio.get_running_loop().create_future()
        self._session_task = asyncio.create_task(self._own_connection(connected))
        return await connected

    async def _own_connection(self, connected: asyncio.Future) -> None:
        from mcp import Client

        try:
            async with Client(self._target(), read_timeout_seconds=self.timeout_s) as client:
                self._client = client
                connected.set_result((await client.list_tools()).tools)
                await self._stop.wait()
        except BaseException as e:  # handed to start() through the future
            if not connected.done():
                connected.set_exception(e if isinstance(e, Exception) else RuntimeError(repr(e)))
            else:
                raise

    def _target(self):
        from mcp import StdioServerParameters

        if isinstance(self.server, str) and self.server.startswith(("http://", "https://")):
            return self.server
        argv = shlex.split(self.server) if isinstance(self.server, str) else list(self.server)
        return StdioServerParameters(command=argv[0], args=argv[1:], env=self.env)

    # --- calls ---------------------------------------------------------------------------------------------

    def call_tool(self, name: str, arguments: dict) -> str:
        if self._loop is None or self._client is None:
            raise ToolError(f"MCP server {self.server!r} is not connected")
        future = asyncio.run_coroutine_threadsafe(self._client.call_tool(name, arguments), self._loop)
        result = future.result(timeout=self.timeout_s + 5)
        text = "\n".join(_content_text(c) for c in result.content)
        if not text and result.structured_content is not None:
            text = str(result.structured_content)
        if result.is_error:
            raise ToolError(text or f"{name} failed on the MCP server")
        return text


def _innermost(e: BaseException) -> BaseException:
    """anyio wraps failures in ExceptionGroups: the first leaf is the message worth showing."""
    while getattr(e, "exceptions", None):  # BaseExceptionGroup (3.11+ or the exceptiongroup backport)
        e = e.exceptions[0]
    return e


def _content_text(block) -> str:
    if getattr(block, "type", None) == "text":
        return block.text
    return f"[{getattr(block, 'type', 'content')} content]"
