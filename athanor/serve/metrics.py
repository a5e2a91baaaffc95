"""Prometheus metrics in text exposition format, kept in process (no prometheus_client dependency).

Counters and histograms are updated by the middleware and the generation path; gauges (queue depth,
running sequences, KV blocks and their used fraction) are read from the loaded engines when /metrics is scraped;
`athanor_generation_tokens_per_second` is the delivered-token rate over the last `RATE_WINDOW` seconds, a gauge
an autoscaler can read without a Prometheus `rate()`. Every replica exposes its own. Not for
tracing individual requests (ops/) or for benchmarks (benchmarks/).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

# seconds; first-token latency on CPU ranges from ~10 ms (cached prefix) to many seconds (long prompts)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# seconds between a request's consecutive tokens: a decode step of a big batch on CPU reaches ~1 s
ITL_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)
RATE_WINDOW = 10.0  # seconds of token arrivals behind the tokens/s gauge


class TokenRate:
    """Tokens per second over a sliding window (one (time, count) entry per delta; old ones dropped)."""

    def __init__(self, window: float = RATE_WINDOW, clock=time.monotonic) -> None:
        self.window, self.clock = window, clock
        self.events: deque[tuple[float, int]] = deque()

    def add(self, num_tokens: int) -> None:
        self.events.append((self.clock(), num_tokens))
        self._trim()

    def per_second(self) -> float:
        self._trim()
        return sum(n for _, n in self.events) / self.window

    def _trim(self) -> None:
        cutoff = self.clock() - self.window
        while self.events and self.events[0][0] < cutoff:
            self.events.popleft()


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)  # per bucket (not cumulative); rendered cumulatively
        self.count, self.sum = 0, 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for i, upper in enumerate(self.buckets):
            if value <= upper:
                self.counts[i] += 1
                break

    def render(self, name: str) -> list[str]:
        lines, total = [], 0
        for upper, n in zip(self.buckets, self.counts):
            total += n
            lines.append(f'{name}_bucket{{le="{upper:g}"}} {total}')
        lines += [f'{name}_bucket{{le="+Inf"}} {self.count}', f"{name}_sum {self.sum:.6f}", f"{name}_count {self.count}"]
        return lines


class Metrics:
    """Process-wide counters; thread-safe (the engine threads never touch it, but be safe).

    Token counters count tokens delivered to clients: tokens generated for a client that went away are
    not in them (the engines' own stats have those)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)  # (method, route, status) -> count
        self.num_prompt_tokens = 0
        self.num_generation_tokens = 0
        self.ttft = Histogram(TTFT_BUCKETS)
        self.itl = Histogram(ITL_BUCKETS)
        self.rate = TokenRate()

    def count_request(self, method: str, route: str, status: int) -> None:
        with self._lock:
            self.requests[(method, route, status)] += 1

    def count_tokens(self, num_prompt: int, num_generated: int) -> None:
        with self._lock:
            self.num_prompt_tokens += num_prompt
            self.num_generation_tokens += num_generated

    def observe_ttft(self, seconds: float) -> None:
        with self._lock:
            self.ttft.observe(seconds)

    def observe_itl(self, seconds: float) -> None:
        with self._lock:
            self.itl.observe(seconds)

    def note_tokens(self, num_tokens: int) -> None:
        """Tokens just delivered to a client (feeds the tokens/s gauge)."""
        with self._lock:
            self.rate.add(num_tokens)

    def render(self, manager) -> str:
        """The whole exposition text; gauges come from `manager.engine_gauges()`."""
        out = ["# HELP athanor_requests_total HTTP requests by method, route and status.",
               "# TYPE athanor_requests_total counter"]
        with self._lock:
            for (method, route, status), n in sorted(self.requests.items()):
                out.append(f'athanor_requests_total{{method="{method}",route="{route}",status="{status}"}} {n}')
            out += _counter("athanor_prompt_tokens_total", "Prompt tokens of finished requests.", self.num_prompt_tokens)
            out += _counter("athanor_generation_tokens_total", "Generated tokens.", self.num_generation_tokens)
            out += ["# HELP athanor_time_to_first_token_seconds Request start to first token.",
                    "# TYPE athanor_time_to_first_token_seconds histogram"]
            out += self.ttft.render("athanor_time_to_first_token_seconds")
            out += ["# HELP athanor_inter_token_latency_seconds Time between a request's consecutive tokens.",
                    "# TYPE athanor_inter_token_latency_seconds histogram"]
            out += self.itl.render("athanor_inter_token_latency_seconds")
            out += _gauge("athanor_generation_tokens_per_second",
                          f"Tokens delivered per second over the last {RATE_WINDOW:g} s.", self.rate.per_second())
        gauges = manager.engine_gauges()
        for name, help_text, rows in gauges + _kv_usage(gauges):
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            out += [f'{name}{{model="{model}"}} {_num(value)}' for model, value in rows]
        return "\n".join(out) + "\n"


def _kv_usage(gauges: list) -> list:
    """The used fraction of each model's KV pool, from the blocks-in-use and blocks-total gauges."""
    by_name = {name: dict(rows) for name, _, rows in gauges}
    used, total = by_name.get("athanor_kv_blocks_in_use", {}), by_name.get("athanor_kv_blocks_total", {})
    rows = [(model, used[model] / total[model]) for model in used if total.get(model)]
    return [("athanor_kv_cache_usage_ratio", "Fraction of the KV-cache pool held by sequences (0..1).", rows)]


def _gauge(name: str, help_text: str, value: float) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {_num(value)}"]


def _num(value: float) -> str:
    """Integers exactly, floats to 6 decimals (Prometheus reads both)."""
    return str(value) if isinstance(value, int) else f"{value:.6f}"


def _counter(name: str, help_text: str, value: int) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} counter", f"{name} {value}"]
