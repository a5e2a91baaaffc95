"""The spans of an agent run, as both agent loops (react.py, native.py) report them through athanor/tracing.py.

One `agent` span per run (invoke_agent: the question in, the answer or the honest stop out), one `chain` span
per step under it, and under each step the model call's `llm` span (llm/traced.py, made a child by `asking`)
and one `tool` span per tool call (execute_tool: name, call id, arguments and result; failed when the tool
raised, refused or was not a tool at all: the model's mistake is the tool call's error).

The agent loops are generators, so these spans are never left current across a `yield` (a context variable set
there would leak into the caller between events): parents are passed explicitly, and `asking` / `tool_span`
make a span current only around code that does not yield. Tool calls that run in worker threads (native.py's
parallel calls) get their step as an explicit parent. Without an installed tracer this is a few attribute
writes. Not for: storing spans (ops/) or the agent loop itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from athanor import tracing

STEP = "athanor.agent.step"
STOPPED = "athanor.agent.stopped_reason"


class AgentRun:
    """The spans of one run: `step(n)` opens step n (ending the one before), `finish(final)` ends them all."""

    def __init__(self, name: str, model: str | None, question: str) -> None:
        self.span = tracing.start_span(f"invoke_agent {name}", "agent", **{
            tracing.OPERATION: "invoke_agent", tracing.AGENT_NAME: name, tracing.REQUEST_MODEL: model})
        self.span.set_content(input=question)
        self.current: tracing.Span | None = None

    def step(self, n: int) -> tracing.Span:
        self._end_step()
        self.current = tracing.start_span(f"step {n}", "chain", parent=self.span, **{STEP: n})
        return self.current

    @contextlib.contextmanager
    def asking(self) -> Iterator[None]:
        """Model calls made inside this block (which must not yield) are children of the current step."""
        with tracing.use_span(self.current or self.span):
            yield

    def finish(self, kind: str, text: str, steps: int) -> None:
        """The run's end: kind "answer" (its text is the output) or "stopped" (the reason is recorded)."""
        self._end_step()
        self.span.set(STEP, steps)
        if kind == "answer":
            self.span.set_content(output=text)
        else:
            self.span.set(STOPPED, text)
        self.span.end()

    def abandon(self, error: BaseException | None) -> None:
        """The run ended without `finish`: an exception (failed) or a caller that stopped reading (aborted)."""
        for s in (self.current, self.span):
            if s is not None and s.end_time is None:
                if error is not None:
                    s.fail(error)
                else:
                    s.set("athanor.aborted", True)
                s.end()

    def _end_step(self) -> None:
        if self.current is not None:
            self.current.end()


@contextlib.contextmanager
def traced_run(name: str, model: str | None, question: str) -> Iterator[AgentRun]:
    """An AgentRun that is ended however the loop ends (the loop calls `finish` on its own honest ending)."""
    run = AgentRun(name, model, question)
    try:
        yield run
    except GeneratorExit:
        run.abandon(None)
        raise
    except BaseException as e:
        run.abandon(e)
        raise
    run.abandon(None)  # no-op after finish


@contextlib.contextmanager
def tool_span(parent: tracing.Span | None, name: str, arguments, call_id: str | None = None) -> Iterator[tracing.Span]:
    """The current span while one tool runs (a tool that runs an agent or workflow nests under it); the caller
    reports the outcome with `tool_outcome`. Must not yield inside."""
    with tracing.span(f"execute_tool {name}", "tool", parent=parent, **{
            tracing.OPERATION: "execute_tool", tracing.TOOL_NAME: name, tracing.TOOL_CALL_ID: call_id}) as s:
        s.set_content(arguments=arguments)
        yield s


def tool_outcome(span: tracing.Span, kind: str, content: str) -> None:
    """kind "tool_result" (the result) or "error" (the span fails with the message the model reads)."""
    span.set_content(result=content)
    if kind == "error":
        span.fail(content)


def refused_tool(parent: tracing.Span | None, name: str, arguments, message: str, call_id: str | None = None) -> None:
    """A tool call that never ran (no such tool, unreadable arguments): a failed tool span all the same."""
    with tool_span(parent, name, arguments, call_id) as s:
        tool_outcome(s, "error", message)
