"""The model span of one API call: opened when the route has its model and parameters, ended with the same usage
the response reports (so a trace's tokens equal the client's `usage`), time to first token, finish reasons, and
(when content is captured) the input messages and the reply with its tool calls.

Every generating route uses it the same way: `span = open_call(...)` before the engine starts, then
`close_call(span, gens, usage, output)` where the response is complete (non-streamed) or in the stream's
`on_close` (streamed), and `fail_call(span, err)` on an error. A streamed body is wrapped in `watch(span, lines)`
so an engine failure mid-stream marks the span failed; a stream left before its end (the client went away) is
failed by `close_call`. `trace_id(span)` is the id a route puts in its final chunk (None when not recorded).
The HTTP root span and X-Trace-Id come from middleware.py. Not for: storing spans (ops/) or agent/workflow spans.
"""

from __future__ import annotations

from typing import Any

from athanor import tracing

_PARAMS = {"temperature": tracing.TEMPERATURE, "top_p": tracing.TOP_P, "max_tokens": tracing.MAX_TOKENS,
           "num_predict": tracing.MAX_TOKENS, "seed": tracing.SEED}


def open_call(operation: str, model: str, options: dict | None = None, input: Any = None,
              kind: str = "llm", tools: list[dict] | None = None) -> tracing.Span:
    """A model span under the request's span: operation is chat | text_completion | embeddings (kind "embedding").
    Recorded only under a traced request (middleware.py opens its root span)."""
    span = tracing.start_span(f"{operation} {model}", kind, **{
        tracing.OPERATION: operation, tracing.SYSTEM: "athanor", tracing.REQUEST_MODEL: model})
    if span.root:  # no request span: the middleware does not trace this request (this app runs with --no-trace)
        span.recorded = False
    for key, value in (options or {}).items():
        if key in _PARAMS and value is not None:
            span.set(_PARAMS[key], value)
    span.set_content(input=input, tools=tools or None)  # the offered tools: dataset export keeps them
    return span


def trace_id(span: tracing.Span | None) -> str | None:
    return span.trace_id if span is not None and span.recorded else None


def close_call(span: tracing.Span, gens: list, usage: dict, output: Any = None, finish_reasons=None,
               response_id: str | None = None) -> None:
    """End with the response's own `usage` ({prompt_tokens, completion_tokens} or {input_tokens, output_tokens}).
    A choice that did not reach its end (aborted: the client went away) fails the span. Once only."""
    if span.end_time is not None:
        return
    span.set_usage(usage.get("prompt_tokens", usage.get("input_tokens")),
                   usage.get("completion_tokens", usage.get("output_tokens")))
    firsts = [g.t_first - g.t_start for g in gens if getattr(g, "t_first", None) is not None]
    if firsts:
        span.set(tracing.TTFT, round(min(firsts), 6))
    reasons = finish_reasons or [g.result.finish_reason for g in gens if g.result.finish_reason]
    span.set(tracing.FINISH_REASONS, list(reasons) or None)
    span.set(tracing.RESPONSE_ID, response_id)
    span.set_content(output=output)
    if any(g.result.finish_reason in (None, "abort") for g in gens):
        span.set("athanor.aborted", True)
        if span.status == "ok":
            span.fail("client went away before the end of the reply")
    span.end()


def fail_call(span: tracing.Span | None, error: BaseException | str) -> None:
    if span is not None and span.end_time is None:
        span.fail(error)
        span.end()


async def watch(span: tracing.Span, lines):
    """A streamed body's chunks, passed through; an exception marks `span` failed (close_call still ends it)."""
    try:
        async for chunk in lines:
            yield chunk
    except Exception as e:
        span.fail(e)
        raise
    finally:
        await lines.aclose()
