"""The OTLP export's conversion: athanor spans -> OpenTelemetry SDK spans (the SDK's InMemorySpanExporter receives
them through the same BatchSpanProcessor the real exporter uses), and the OTLP protobuf encoding of them."""

from __future__ import annotations

import json

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace.status import StatusCode

from athanor import tracing
from athanor.ops.otlp import OtlpExporter, attribute_value, error_type, traces_url

CLIENT_TRACE, CLIENT_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"  # the W3C spec's example


@pytest.fixture
def exported():
    """Spans ended inside the test, as the SDK span exporter received them (by name)."""
    memory = InMemorySpanExporter()
    exporter = OtlpExporter("http://127.0.0.1:4318", span_exporter=memory)
    previous = tracing.install(exporter)
    result: dict = {}

    def collect() -> dict:
        assert exporter.flush()
        result.update({s.name: s for s in memory.get_finished_spans()})
        return result

    yield collect
    tracing.install(previous)
    exporter.close()


def _request_trace() -> tuple[tracing.Span, tracing.Span, tracing.Span]:
    """A client's traceparent -> http root -> llm call -> tool that fails, as serve/agent code makes them."""
    with tracing.span("POST /v1/chat/completions", "http", (CLIENT_TRACE, CLIENT_SPAN),
                      **{"http.request.method": "POST"}) as root:
        with tracing.span("chat smollm2", "llm", **{tracing.OPERATION: "chat", tracing.SYSTEM: "athanor",
                                                    tracing.REQUEST_MODEL: "smollm2"}) as llm:
            llm.set_usage(21, 5).set(tracing.FINISH_REASONS, ["tool_calls"])
            llm.set_content(input=[{"role": "user", "content": "2+2?"}],
                            output={"role": "assistant", "tool_calls": [{"name": "calc"}]})
            llm.set("athanor.sampling", {"temperature": 0.0})  # not an OTLP type: sent as JSON text
        with pytest.raises(ZeroDivisionError), \
                tracing.span("execute_tool calc", "tool", **{tracing.TOOL_NAME: "calc"}) as tool:
            raise ZeroDivisionError("division by zero")
    return root, llm, tool


def test_ids_parents_times_and_kinds_are_ours(exported):
    root, llm, tool = _request_trace()
    spans = exported()
    assert set(spans) == {root.name, llm.name, tool.name}
    for ours in (root, llm, tool):
        theirs = spans[ours.name]
        assert format(theirs.context.trace_id, "032x") == ours.trace_id == CLIENT_TRACE
        assert format(theirs.context.span_id, "016x") == ours.span_id
        assert theirs.context.trace_flags.sampled
        assert format(theirs.parent.span_id, "016x") == ours.parent_id
        assert theirs.start_time == round(ours.start * 1e9) and theirs.end_time == round(ours.end_time * 1e9)
        assert theirs.start_time <= theirs.end_time
    # the root continues the client's span (remote); the children hang under the root (this process)
    assert format(spans[root.name].parent.span_id, "016x") == CLIENT_SPAN and spans[root.name].parent.is_remote
    assert llm.parent_id == tool.parent_id == root.span_id and not spans[llm.name].parent.is_remote
    assert spans[root.name].kind == SpanKind.SERVER
    assert spans[llm.name].kind == SpanKind.CLIENT
    assert spans[tool.name].kind == SpanKind.INTERNAL
    resource = spans[llm.name].resource.attributes
    assert resource["service.name"] == "athanor" and resource["telemetry.sdk.language"] == "python"
    assert spans[llm.name].instrumentation_scope.name == "athanor"


def test_attributes_kept_and_standard_ones_added(exported):
    _, llm, tool = _request_trace()
    spans = exported()
    attrs = spans[llm.name].attributes
    for key, value in llm.attributes.items():  # every one of ours, same name
        if key == "athanor.sampling":
            assert json.loads(attrs[key]) == value
        else:
            assert attrs[key] == (list(value) if isinstance(value, list) else value), key
    assert attrs[tracing.INPUT_TOKENS] == 21 and attrs[tracing.OUTPUT_TOKENS] == 5
    assert list(attrs[tracing.FINISH_REASONS]) == ["tool_calls"]
    assert json.loads(attrs[tracing.INPUT_MESSAGES]) == [{"role": "user", "content": "2+2?"}]
    assert attrs["gen_ai.provider.name"] == "athanor" and attrs[tracing.SYSTEM] == "athanor"
    assert attrs["athanor.span.kind"] == "llm"
    tool_attrs = spans[tool.name].attributes
    assert tool_attrs[tracing.OPERATION] == "execute_tool" and tool_attrs[tracing.TOOL_NAME] == "calc"


def test_status_ok_and_error(exported):
    root, llm, tool = _request_trace()
    spans = exported()
    assert spans[llm.name].status.status_code == StatusCode.OK
    failed = spans[tool.name]
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.status.description == tool.error == "ZeroDivisionError: division by zero"
    assert failed.attributes["error.type"] == "ZeroDivisionError"
    assert "error.type" not in spans[root.name].attributes


def test_protobuf_encoding_keeps_ids_and_values(exported):
    _, llm, _ = _request_trace()
    request = encode_spans(list(exported().values()))
    scope_spans = request.resource_spans[0].scope_spans[0]
    assert scope_spans.scope.name == "athanor"
    by_name = {s.name: s for s in scope_spans.spans}
    pb = by_name[llm.name]
    assert pb.trace_id.hex() == llm.trace_id and pb.span_id.hex() == llm.span_id
    assert pb.parent_span_id.hex() == llm.parent_id
    values = {kv.key: kv.value for kv in pb.attributes}
    assert values[tracing.INPUT_TOKENS].int_value == 21
    assert [v.string_value for v in values[tracing.FINISH_REASONS].array_value.values] == ["tool_calls"]
    assert json.loads(values[tracing.OUTPUT_MESSAGES].string_value)["tool_calls"][0]["name"] == "calc"
    assert values["athanor.sampling"].string_value  # a dict went as text, not lost


def test_traces_url_accepts_base_or_full_url():
    assert traces_url("http://127.0.0.1:6006") == "http://127.0.0.1:6006/v1/traces"
    assert traces_url("http://127.0.0.1:6006/") == "http://127.0.0.1:6006/v1/traces"
    assert traces_url("http://127.0.0.1:4318/v1/traces") == "http://127.0.0.1:4318/v1/traces"
    assert traces_url("https://otel.example:443/api/public/otel") == "https://otel.example:443/api/public/otel/v1/traces"
    for bad in ("127.0.0.1:4318", "grpc://127.0.0.1:4317", "", "http://"):
        with pytest.raises(ValueError, match="otlp-endpoint"):
            traces_url(bad)


def test_attribute_values():
    assert attribute_value("x") == "x" and attribute_value(3) == 3 and attribute_value(True) is True
    assert attribute_value(("stop", "length")) == ["stop", "length"]
    assert json.loads(attribute_value([1, "a"])) == [1, "a"]  # OTLP arrays are of one type
    assert json.loads(attribute_value([])) == []
    assert json.loads(attribute_value({"a": [1]})) == {"a": [1]}
    assert error_type("ValueError: bad") == "ValueError" and error_type("engine stopped") == "_OTHER"
    assert error_type(None) == "_OTHER"


def test_no_trace_content_sends_no_messages():
    memory = InMemorySpanExporter()
    exporter = OtlpExporter("http://127.0.0.1:4318/v1/traces", span_exporter=memory)
    previous = tracing.install(exporter, content=False)  # what --no-trace-content installs
    try:
        with tracing.span("chat smollm2", "llm") as s:
            s.set_usage(3, 4).set_content(input=[{"role": "user", "content": "secret"}], output="also secret")
        assert exporter.flush()
    finally:
        tracing.install(previous)
        exporter.close()
    (sent,) = memory.get_finished_spans()
    assert sent.attributes[tracing.INPUT_TOKENS] == 3
    assert not set(tracing.CONTENT_KEYS) & set(sent.attributes)
    assert "secret" not in repr(dict(sent.attributes))
