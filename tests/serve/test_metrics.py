"""Prometheus text: cumulative histogram buckets, labelled request counters, gauges from the manager."""

from __future__ import annotations

from athanor.serve.metrics import Histogram, Metrics


class _NoModels:
    def engine_gauges(self):
        return [("athanor_queue_depth", "Requests waiting.", [("m:latest", 3)])]


def test_histogram_is_cumulative():
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.5, 0.7, 5.0):
        h.observe(v)
    lines = h.render("x")
    assert lines[:3] == ['x_bucket{le="0.1"} 1', 'x_bucket{le="1"} 3', 'x_bucket{le="+Inf"} 4']
    assert lines[-1] == "x_count 4" and lines[-2] == "x_sum 6.250000"


def test_render_counters_and_gauges():
    m = Metrics()
    m.count_request("POST", "/api/chat", 200)
    m.count_request("POST", "/api/chat", 200)
    m.count_tokens(10, 4)
    text = m.render(_NoModels())
    assert 'athanor_requests_total{method="POST",route="/api/chat",status="200"} 2' in text
    assert "athanor_prompt_tokens_total 10" in text and "athanor_generation_tokens_total 4" in text
    assert 'athanor_queue_depth{model="m:latest"} 3' in text and "# TYPE athanor_queue_depth gauge" in text
