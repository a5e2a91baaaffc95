"""Where a streamed token's CPU goes inside `athanor serve`, thread by thread, at concurrency 1: an A/B of source trees
or environments, rounds interleaved.

    cd benchmarks && PYTHONPATH=..:. python bench_serve_threads.py [--baseline-tree /path/to/other/checkout]
        [--env NAME=VAR=VALUE ...] [--rounds 3] [--requests 16] [--max-tokens 64] [--threads 2] [--model smollm2]

Each variant's server starts fresh, answers two warm-up requests, then `bench_serve.run_level` streams --requests
chats of --max-tokens greedy tokens one at a time. Printed per round: ITL p50/p99, output tokens/s, TTFT p50, and the
CPU time (user + system, /proc/PID/task/TID/stat) each of the server's busy threads spent per output token, largest
first: the engine thread (it also leads the OpenMP team), then the OpenMP worker(s), then the event loop. An OpenMP
worker far below the engine thread sleeps between the step's parallel regions (libgomp's spin-wait cut short: see
docs/architecture.md on OpenMP pools). `--env NAME=VAR=VALUE` adds a variant with VAR=VALUE in the server's
environment (repeat for more; NAME groups them). Not a correctness check; record results in RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from pathlib import Path

from bench_serve import run_level
from bench_serve_peers import free_port, stop_server, wait_ready


def thread_cpu_ms(pid: int) -> dict[str, float]:
    """CPU milliseconds of every thread of `pid` so far, by thread id."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[task.name] = (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")
    return out


def measure(name: str, env: dict, args) -> None:
    port = free_port()
    cmd = [str(Path(sys.executable).with_name("athanor")), "serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": str(args.threads), **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(url, proc)
        asyncio.run(run_level(url, args.model, 1, 2, args.max_tokens))
        before = thread_cpu_ms(proc.pid)
        r = asyncio.run(run_level(url, args.model, 1, args.requests, args.max_tokens))
        after = thread_cpu_ms(proc.pid)
        per_token = sorted(((after[t] - before.get(t, 0.0)) / max(r["tokens"], 1) for t in after), reverse=True)
        busy = " / ".join(f"{ms:.2f}" for ms in per_token if ms >= 0.05)
        print(f"| {name} | {r['itl_p50_ms']:.1f} | {r['itl_p99_ms']:.1f} | {r['output_tok_s']:.1f} "
              f"| {r['ttft_p50_ms']:.0f} | {r['failed']} | {busy} |", flush=True)
    finally:
        stop_server(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-tree", default=None, help="another athanor checkout, served too (A/B)")
    ap.add_argument("--env", action="append", default=[], help="NAME=VAR=VALUE: a variant with VAR=VALUE set")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="smollm2", help="a model in the store (default: the built-in)")
    args = ap.parse_args()
    variants: dict[str, dict] = {"this tree": {}}
    if args.baseline_tree:
        variants[f"from {args.baseline_tree}"] = {"PYTHONPATH": str(Path(args.baseline_tree).resolve())}
    for spec in args.env:
        name, var, value = spec.split("=", 2)
        variants.setdefault(name, {})[var] = value
    print(f"load average at start: {os.getloadavg()}")
    print("| server | ITL p50 ms | ITL p99 ms | out tok/s | TTFT p50 ms | failed | busy threads' CPU ms per token |")
    print("|---|---|---|---|---|---|---|")
    for _ in range(args.rounds):
        for name, env in variants.items():
            measure(name, env, args)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
