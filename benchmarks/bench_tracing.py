"""Tracing overhead on serving throughput: the same streamed chat load (bench_serve.py's, default c=8) against one
athanor server in this process, with tracing off and on in alternating rounds, so both see the same machine state.

"off" uninstalls the tracer and clears app.state.tracing (no spans, no X-Trace-Id: what `--no-trace` gives);
"on" is the default (SQLite store with content capture, one writer thread). Prints output tok/s per round, the
median of each mode, the ratio on/off (of the medians, and the median of each round's ratio), and checks every "on" request left a trace.

Usage: python benchmarks/bench_tracing.py [--rounds 3] [--concurrency 8] [--requests 32] [--max-tokens 64]
       [--model smollm2] [--no-content]
The issue's bar: overhead under 3% at c=8. Run on a quiet machine (`uptime`) before recording numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from bench_serve import run_level  # the same request shape and tok/s accounting


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds per mode (off, on, off, on, ...)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--no-content", action="store_true", help="trace without message content (--no-trace-content)")
    args = ap.parse_args()

    from athanor import tracing
    from athanor.ops.tracing_setup import TraceSettings
    from athanor.serve.app import create_app
    from athanor.serve.background import serve_in_thread

    with tempfile.TemporaryDirectory() as tmp:
        settings = TraceSettings(path=Path(tmp) / "traces.sqlite", content=not args.no_content)
        app = create_app(trace=settings)
        with serve_in_thread(app) as (url, _):
            tracer = app.state.tracing

            def set_mode(on: bool) -> None:
                app.state.tracing = tracer if on else None
                tracing.install(tracer if on else None, content=settings.content)

            rates: dict[str, list[float]] = {"off": [], "on": []}
            print("| round | tracing | reqs | failed | tokens | out tok/s | traces stored |")
            print("|---|---|---|---|---|---|---|")
            for r in range(args.rounds):
                for mode in ("off", "on"):
                    set_mode(mode == "on")
                    res = asyncio.run(run_level(url + "/v1", args.model, args.concurrency, args.requests,
                                                args.max_tokens))
                    tracer.flush()
                    rates[mode].append(res["output_tok_s"])
                    print(f"| {r + 1} | {mode} | {res['requests']} | {res['failed']} | {res['tokens']} | "
                          f"{res['output_tok_s']:.1f} | {tracer.store.count()} |", flush=True)
            set_mode(True)
            stored = tracer.store.count()
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    pairs = [b / a for a, b in zip(rates["off"], rates["on"])]  # each round's on/off: drifts in load cancel out
    expected = args.rounds * (args.requests + 1)  # each "on" round: its requests and one warm-up
    print(f"\nc={args.concurrency}: median tok/s off {off:.1f}, on {on:.1f}, ratio on/off {on / off:.4f} "
          f"(overhead {100 * (1 - on / off):+.2f}%); median of per-round ratios {statistics.median(pairs):.4f}; "
          f"traces stored {stored} (expected {expected})")


if __name__ == "__main__":
    main()
