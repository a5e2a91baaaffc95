"""The model span of one API call: opened when the route has its model and parameters, ended with the same usage
the response reports (so a trace's tokens equal the client's `usage`), time to first token, finish reasons, and
(when content is captured) the input messages and the reply with its tool calls.

Every generating route uses it the same way: `span = open_call(...)` before the engine starts, then
`close_call(span, gens, usage, output)` where the response is complete (non-streamed) or in the stream's
`on_close` (streamed), and `fail_call(span, err)` on an error. The HTTP root span and X-Trace-Id come from
middleware.py. Not for: storing spans (ops/) or agent/workflow spans (their rooms).
"""

from __future__ import annotations

from typing import Any

from athanor import tracing

_PARAMS = {"temperature": tracing.TEMPERATURE, "top_p": tracing.TOP_P, "max_tokens": tracing.MAX_TOKENS,
           "num_predict": tracing.MAX_TOKENS, "seed": tracing.SEED}


def open_call(operation: str, model: str, options: dict | None = None, input: Any = None) -> tracing.Span:
    """An `llm` span under the request's span: operation is chat | text_completion | embeddings."""
    span = tracing.start_span(f"{operation} {model}", "llm", **{
        tracing.OPERATION: operation, tracing.SYSTEM: "athanor", tracing.REQUEST_MODEL: model})
    for key, value in (options or {}).items():
        if key in _PARAMS and value is not None:
            span.set(_PARAMS[key], value)
    span.set_content(input=input)
    return span


def close_call(span: tracing.Span, gens: list, usage: dict, output: Any = None, finish_reasons=None,
               response_id: str | None = None) -> None:
    """End with the response's own `usage` ({prompt_tokens, completion_tokens} or Ollama's counts)."""
    span.set_usage(usage.get("prompt_tokens", usage.get("input_tokens")),
                   usage.get("completion_tokens", usage.get("output_tokens")))
    firsts = [g.t_first - g.t_start for g in gens if getattr(g, "t_first", None) is not None]
    if firsts:
        span.set(tracing.TTFT, round(min(firsts), 6))
    reasons = finish_reasons or [g.result.finish_reason for g in gens if g.result.finish_reason]
    span.set(tracing.FINISH_REASONS, list(reasons) or None)
    span.set(tracing.RESPONSE_ID, response_id)
    span.set_content(output=output)
    if any(g.result.finish_reason == "abort" for g in gens):
        span.set("athanor.aborted", True)
    span.end()


def fail_call(span: tracing.Span | None, error: BaseException | str) -> None:
    if span is not None and span.end_time is None:
        span.fail(error)
        span.end()
