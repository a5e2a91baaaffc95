"""Standard export: athanor's ended spans sent as OpenTelemetry spans over OTLP/HTTP (`--otlp-endpoint URL`).

Any OTLP collector takes them (Arize Phoenix, Langfuse, Jaeger, the OpenTelemetry Collector). Each
`athanor.tracing.Span` becomes an SDK `ReadableSpan` that keeps our trace id, span id, parent, times, status and
attributes (already GenAI-convention names: lists stay lists, JSON content stays a string), plus the standard
attributes a GenAI backend expects that we spell differently or leave implicit (`gen_ai.provider.name` from
`gen_ai.system`, `gen_ai.operation.name` for tool/agent/embedding spans, `error.type` on failures). Spans go
through the SDK's BatchSpanProcessor (a bounded queue and one sender thread), so `on_end` never waits on the
network (the conversion too happens on that thread); a collector that is down loses spans, never requests.

    exporter = OtlpExporter("http://127.0.0.1:6006")   # base URL or the full .../v1/traces URL
    exporter.on_end(span); exporter.flush(); exporter.close()

Not for: making spans (athanor/tracing.py), storing them (trace_store.py) or choosing exporters (tracing_setup.py).
"""

from __future__ import annotations

import json
import os
import types
import urllib.parse
from typing import Any

from athanor import tracing

TRACES_PATH = "/v1/traces"
PROVIDER = "gen_ai.provider.name"   # the current convention's name for what older ones called gen_ai.system
ERROR_TYPE = "error.type"
# spans whose GenAI operation is implied by their kind (the conventions' well-known values)
_OPERATIONS = {"tool": "execute_tool", "agent": "invoke_agent", "embedding": "embeddings"}
_PRIMITIVES = (bool, str, int, float)


def traces_url(endpoint: str) -> str:
    """A collector's base URL (http://host:4318) or its full traces URL -> the URL spans are POSTed to.

    Like OTEL_EXPORTER_OTLP_ENDPOINT, a base URL gets `v1/traces` appended to its path; a URL whose path already
    ends in /v1/traces is used as given (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)."""
    url = urllib.parse.urlsplit(endpoint.strip())
    if url.scheme not in ("http", "https") or not url.netloc:
        raise ValueError(f"--otlp-endpoint must be an http(s) URL such as http://127.0.0.1:4318, got {endpoint!r}")
    path = url.path.rstrip("/")
    if not path.endswith(TRACES_PATH):
        path += TRACES_PATH
    return urllib.parse.urlunsplit((url.scheme, url.netloc, path, url.query, ""))


def attribute_value(value: Any) -> Any:
    """An OTLP-safe attribute value: primitives and flat one-type lists as they are, anything else as JSON text."""
    if isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, _PRIMITIVES) for v in value) \
            and len({type(v) for v in value}) == 1:
        return list(value)
    return json.dumps(value, default=str)


def error_type(error: str | None) -> str:
    """`ValueError: bad input` -> `ValueError` (a low-cardinality class, as `error.type` asks); else `_OTHER`."""
    head = (error or "").split(":", 1)[0].strip()
    return head if head and head.replace(".", "").replace("_", "").isalnum() else "_OTHER"


def export_attributes(span: tracing.Span) -> dict[str, Any]:
    """Our attributes (names unchanged) plus the standard ones the GenAI conventions add."""
    attrs = {key: attribute_value(value) for key, value in span.attributes.items() if value is not None}
    if tracing.SYSTEM in attrs:
        attrs.setdefault(PROVIDER, attrs[tracing.SYSTEM])
    if span.kind in _OPERATIONS:
        attrs.setdefault(tracing.OPERATION, _OPERATIONS[span.kind])
    if span.status == "error":
        attrs.setdefault(ERROR_TYPE, error_type(span.error))
    attrs["athanor.span.kind"] = span.kind
    return attrs


def _span_kind(kind: str):
    from opentelemetry.trace import SpanKind

    # a model call is a CLIENT span (the conventions' default for inference); the request's root span is the
    # SERVER side of the client's HTTP call; the rest (agent steps, tools, workflow nodes, retrieval) is INTERNAL
    return {"llm": SpanKind.CLIENT, "embedding": SpanKind.CLIENT, "http": SpanKind.SERVER}.get(kind,
                                                                                              SpanKind.INTERNAL)


def _nanos(seconds: float) -> int:
    return round(seconds * 1e9)


def to_readable_span(span: tracing.Span, resource, scope):
    """One ended athanor span -> an OpenTelemetry SDK ReadableSpan with the same ids, parent, times and status."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext, TraceFlags
    from opentelemetry.trace.status import Status, StatusCode

    assert span.end_time is not None, "export only ended spans"
    sampled = TraceFlags(TraceFlags.SAMPLED)
    context = SpanContext(int(span.trace_id, 16), int(span.span_id, 16), is_remote=False, trace_flags=sampled)
    parent = None
    if span.parent_id:
        # a root span's parent is the client's span from its traceparent: remote, in another process
        parent = SpanContext(int(span.trace_id, 16), int(span.parent_id, 16), is_remote=span.root,
                             trace_flags=sampled)
    status = Status(StatusCode.ERROR, span.error) if span.status == "error" else Status(StatusCode.OK)
    return ReadableSpan(name=span.name, context=context, parent=parent, resource=resource,
                        attributes=export_attributes(span), kind=_span_kind(span.kind), status=status,
                        start_time=_nanos(span.start), end_time=_nanos(span.end_time),
                        instrumentation_scope=scope)


def _resource():
    from opentelemetry.sdk.resources import Resource

    from athanor import __version__

    # OTEL_SERVICE_NAME still wins, as with any OpenTelemetry SDK
    return Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "athanor",
                            "service.version": __version__})


class _Ended:
    """An ended athanor span waiting in the SDK's queue; converted on the sender thread, not the request path."""

    __slots__ = ("span",)
    # all BatchSpanProcessor.on_end reads from a span: ours are always sampled (no sampler in athanor)
    context = types.SimpleNamespace(trace_flags=types.SimpleNamespace(sampled=True))

    def __init__(self, span: tracing.Span) -> None:
        self.span = span


class _Converting:
    """The SpanExporter the batch processor calls: converts a batch of _Ended, hands it to the real exporter."""

    def __init__(self, exporter, resource, scope) -> None:
        self.exporter, self.resource, self.scope = exporter, resource, scope

    def export(self, batch: list[_Ended]):
        return self.exporter.export([to_readable_span(e.span, self.resource, self.scope) for e in batch])

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.exporter.shutdown()


class OtlpExporter:
    """A tracer-side exporter (Tracing calls on_end/flush/close): queues, converts and sends in batches."""

    def __init__(self, endpoint: str, span_exporter=None, schedule_delay_ms: int = 1000,
                 max_queue_size: int = 8192) -> None:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        from athanor import __version__

        self.endpoint = traces_url(endpoint)
        if span_exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            span_exporter = OTLPSpanExporter(endpoint=self.endpoint, timeout=10)
        self.resource = _resource()
        self.scope = InstrumentationScope("athanor", __version__)
        self.processor = BatchSpanProcessor(_Converting(span_exporter, self.resource, self.scope),
                                            max_queue_size=max_queue_size, schedule_delay_millis=schedule_delay_ms)

    def on_end(self, span: tracing.Span) -> None:
        """Queue one ended span: a deque append, never a wait (a full queue drops the oldest, as the SDK does)."""
        self.processor.on_end(_Ended(span))

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Send everything queued so far (blocks; a collector that is down is retried, then its spans dropped).
        False once closed. The SDK does not yet bound this by `timeout_s`; the exporter's own 10 s timeout does."""
        return self.processor.force_flush(int(timeout_s * 1000))

    def close(self) -> None:
        self.processor.shutdown()
