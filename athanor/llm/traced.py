"""The `llm` span of one ChatModel call: the one way llm/ models report a request through athanor/tracing.py.

`traced_stream(...)` wraps a model's own delta generator: the span opens when the stream starts (child of the
current span: an agent step, a workflow node, a `kb ask` chain), records the request (model, sampling
parameters, input messages), the time to first token (the first delta with text or tool calls, or earlier when
the model calls `span.first_token()` itself), and at the end the usage of the final delta (the same `Usage`
the caller receives), the finish reason and the reply as an assistant message with its tool calls. An error
fails the span; a stream the caller abandons is ended and marked `athanor.aborted`. `traced_response` does the
same for a model that answers in one piece (OpenAIChatModel.chat).

The span is never made current: an llm call has no children, and a context variable set inside a generator
would leak into whatever the caller does between two deltas. Without an installed tracer all of this is a few
attribute writes. Not for: HTTP model spans (serve/trace_calls.py) or storing spans (ops/).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from athanor import tracing
from athanor.llm.base import ChatDelta, ChatResponse, Usage, tool_call_message

PARAMS = {"temperature": tracing.TEMPERATURE, "top_p": tracing.TOP_P, "max_tokens": tracing.MAX_TOKENS,
          "num_predict": tracing.MAX_TOKENS, "max_completion_tokens": tracing.MAX_TOKENS, "seed": tracing.SEED}
ABORTED = "athanor.aborted"


def open_llm_span(model: str, system: str, messages: list[dict], options: dict,
                  tools: list[dict] | None = None) -> tracing.Span:
    """A `chat` span under the current span, with the request's model, sampling parameters and messages."""
    span = tracing.start_span(f"chat {model}", "llm", **{
        tracing.OPERATION: "chat", tracing.SYSTEM: system, tracing.REQUEST_MODEL: model})
    for key, value in options.items():
        if key in PARAMS and value is not None:
            span.set(PARAMS[key], value)
    if tools:
        span.set("athanor.tools", [t.get("function", t).get("name") for t in tools])
    span.set_content(input=messages, tools=tools or None)
    return span


def close_llm_span(span: tracing.Span, response: ChatResponse, complete: bool = True) -> None:
    """End with the response the caller gets: its usage, finish reason and reply (complete=False: a stream cut
    short before its final delta; only the reply so far is recorded)."""
    if complete:
        span.set_usage(response.usage.prompt_tokens, response.usage.completion_tokens)
        span.set(tracing.FINISH_REASONS, [response.finish_reason])
    span.set_content(output=tool_call_message(response.text, response.tool_calls))
    span.end()


def traced_stream(model: str, system: str, messages: list[dict], options: dict, tools: list[dict] | None,
                  deltas: Callable[[tracing.Span], Iterator[ChatDelta]]) -> Iterator[ChatDelta]:
    """Yield what `deltas(span)` yields, recording it on one `llm` span (see the module docstring)."""
    span = open_llm_span(model, system, messages, options, tools)
    text, calls, reason, usage = [], [], None, None
    try:
        for d in deltas(span):
            if d.text or d.tool_calls:
                span.first_token()
            text.append(d.text)
            calls.extend(d.tool_calls)
            reason, usage = d.finish_reason or reason, d.usage or usage
            yield d
    except GeneratorExit:
        span.set(ABORTED, True)
        raise
    except BaseException as e:
        span.fail(e)
        raise
    finally:
        close_llm_span(span, ChatResponse("".join(text), calls, reason or "stop", usage or Usage()),
                       complete=reason is not None)


def traced_response(model: str, system: str, messages: list[dict], options: dict, tools: list[dict] | None,
                    call: Callable[[tracing.Span], ChatResponse]) -> ChatResponse:
    """Return `call(span)`'s response, recorded on one `llm` span; time to first token is the whole call."""
    span = open_llm_span(model, system, messages, options, tools)
    try:
        response = call(span)
    except BaseException as e:
        span.fail(e)
        span.end()
        raise
    span.first_token()
    close_llm_span(span, response)
    return response
