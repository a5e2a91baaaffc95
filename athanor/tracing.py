"""The one tracing seam: spans in a context variable, handed to whichever tracer ops/ installed (or to nobody).

Every room may import this module (it imports nothing of athanor); ops/ installs the tracer that stores spans
(SQLite, OTLP). Without a tracer, `span()` still yields a Span the caller can fill, but it is not recorded and
costs a few attribute writes. Attribute names follow OpenTelemetry's GenAI conventions (`gen_ai.*`, see
GENAI below) so the OTLP export is a straight copy; athanor's own extras are `athanor.*`.

    with tracing.span("chat smollm2", "llm", **{"gen_ai.request.model": "smollm2"}) as s:
        ...; s.set_usage(12, 30); s.set_content(input=messages, output=reply)

A span opened in one task and ended in another (a streamed HTTP body) uses `start_span()` / `span.end()`, and
`use_span(s)` to make it the parent of spans opened meanwhile. A W3C `traceparent` from a client continues its
trace (`parse_traceparent`). Not for: storing, querying or exporting spans (ops/).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any, Protocol

KINDS = ("http", "llm", "agent", "tool", "workflow", "node", "retrieval", "embedding", "eval", "chain")

# GenAI semantic-convention attribute names used across athanor (one spelling each)
OPERATION = "gen_ai.operation.name"      # chat | text_completion | embeddings | execute_tool | invoke_agent
SYSTEM = "gen_ai.system"                 # "athanor" for our engine, else the remote API's name
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
TEMPERATURE = "gen_ai.request.temperature"
TOP_P = "gen_ai.request.top_p"
MAX_TOKENS = "gen_ai.request.max_tokens"
SEED = "gen_ai.request.seed"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_MESSAGES = "gen_ai.input.messages"     # JSON: the messages (or prompt) sent; only when content is captured
OUTPUT_MESSAGES = "gen_ai.output.messages"   # JSON: the reply as an assistant message (tool calls kept)
TOOL_DEFINITIONS = "gen_ai.tool.definitions"  # JSON: the tools offered to the model (content)
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_ARGUMENTS = "gen_ai.tool.call.arguments"
TOOL_RESULT = "gen_ai.tool.call.result"
AGENT_NAME = "gen_ai.agent.name"
TTFT = "athanor.time_to_first_token_s"
REQUEST_ID = "athanor.request_id"
GENAI = (OPERATION, SYSTEM, REQUEST_MODEL, RESPONSE_MODEL, RESPONSE_ID, TEMPERATURE, TOP_P, MAX_TOKENS, SEED,
         INPUT_TOKENS, OUTPUT_TOKENS, FINISH_REASONS, INPUT_MESSAGES, OUTPUT_MESSAGES, TOOL_DEFINITIONS, TOOL_NAME,
         TOOL_CALL_ID, TOOL_ARGUMENTS, TOOL_RESULT, AGENT_NAME)
CONTENT_KEYS = (INPUT_MESSAGES, OUTPUT_MESSAGES, TOOL_DEFINITIONS, TOOL_ARGUMENTS, TOOL_RESULT)  # dropped under --no-trace-content


def new_trace_id() -> str:
    return os.urandom(16).hex()


def new_span_id() -> str:
    return os.urandom(8).hex()


@dataclasses.dataclass
class Span:
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str | None = None
    start: float = dataclasses.field(default_factory=time.time)  # epoch seconds
    end_time: float | None = None
    attributes: dict[str, Any] = dataclasses.field(default_factory=dict)
    status: str = "ok"  # ok | error
    error: str | None = None
    recorded: bool = True  # False: no tracer was installed when it started; end() hands it to nobody
    root: bool = False  # no parent in this process (a new trace, or one continued from a client's traceparent)

    def set(self, key: str, value: Any) -> Span:
        if value is not None:
            self.attributes[key] = value
        return self

    def update(self, attributes: dict[str, Any]) -> Span:
        for k, v in attributes.items():
            self.set(k, v)
        return self

    def set_usage(self, input_tokens: int | None, output_tokens: int | None) -> Span:
        return self.set(INPUT_TOKENS, input_tokens).set(OUTPUT_TOKENS, output_tokens)

    def set_content(self, **content: Any) -> Span:
        """input=/output=/tools=/arguments=/result= as JSON text, only while content capture is on."""
        if not capture_content():
            return self
        keys = {"input": INPUT_MESSAGES, "output": OUTPUT_MESSAGES, "tools": TOOL_DEFINITIONS, "arguments": TOOL_ARGUMENTS,
                "result": TOOL_RESULT}
        for name, value in content.items():
            if value is not None:
                self.attributes[keys[name]] = value if isinstance(value, str) else json.dumps(value, default=str)
        return self

    def first_token(self) -> None:
        """Call when the first output token arrives (once; later calls are ignored)."""
        if TTFT not in self.attributes:
            self.attributes[TTFT] = round(time.time() - self.start, 6)

    def fail(self, error: BaseException | str) -> Span:
        self.status = "error"
        self.error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        return self

    @property
    def duration(self) -> float | None:
        return None if self.end_time is None else self.end_time - self.start

    def end(self) -> None:
        """Close the span (once) and hand it to the tracer."""
        if self.end_time is not None:
            return
        self.end_time = time.time()
        tracer = _tracer
        if self.recorded and tracer is not None:
            tracer.on_end(self)

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-01"


class Tracer(Protocol):
    def on_end(self, span: Span) -> None: ...  # must not block: queue it


_tracer: Tracer | None = None
_capture_content = True
_current: contextvars.ContextVar[Span | None] = contextvars.ContextVar("athanor_span", default=None)
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


def install(tracer: Tracer | None, content: bool = True) -> Tracer | None:
    """Make `tracer` receive every span ended from now on (None: stop recording); returns the one it replaces."""
    global _tracer, _capture_content
    previous, _tracer, _capture_content = _tracer, tracer, content
    return previous


def installed() -> Tracer | None:
    return _tracer


def capture_content() -> bool:
    return _capture_content


def current_span() -> Span | None:
    return _current.get()


def current_trace_id() -> str | None:
    s = _current.get()
    return s.trace_id if s else None


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """A W3C traceparent header -> (trace id, parent span id); None when absent or malformed (then a new trace)."""
    m = _TRACEPARENT.match((value or "").strip().lower())
    if not m or m.group(1) == "0" * 32 or m.group(2) == "0" * 16:
        return None
    return m.group(1), m.group(2)


def start_span(name: str, kind: str, parent: Span | tuple[str, str] | None = None, **attributes: Any) -> Span:
    """A new span, child of `parent` (a Span, a (trace id, span id) pair from a traceparent) or else of the current
    span; a root span starts a new trace. Not made current: see `use_span`."""
    if kind not in KINDS:
        raise ValueError(f"span kind must be one of {', '.join(KINDS)}, got {kind!r}")
    parent = parent if parent is not None else _current.get()
    if isinstance(parent, Span):
        trace_id, parent_id = parent.trace_id, parent.span_id
    elif parent:
        trace_id, parent_id = parent
    else:
        trace_id, parent_id = new_trace_id(), None
    s = Span(name, kind, trace_id, new_span_id(), parent_id, recorded=_tracer is not None,
             root=not isinstance(parent, Span))
    return s.update(attributes)


def enter_span(s: Span) -> contextvars.Token:
    """From here on (in this task and those it starts) spans opened are children of `s`; undo with leave_span."""
    return _current.set(s)


def leave_span(token: contextvars.Token) -> None:
    _current.reset(token)


@contextlib.contextmanager
def use_span(s: Span) -> Iterator[Span]:
    """Spans opened inside this block (in this task and those it starts) are children of `s`."""
    token = enter_span(s)
    try:
        yield s
    finally:
        leave_span(token)


@contextlib.contextmanager
def span(name: str, kind: str, parent: Span | tuple[str, str] | None = None, **attributes: Any) -> Iterator[Span]:
    """Open a span, make it current, end it when the block ends; an exception marks it failed and propagates."""
    s = start_span(name, kind, parent, **attributes)
    try:
        with use_span(s):
            yield s
    except BaseException as e:
        s.fail(e)
        raise
    finally:
        s.end()
