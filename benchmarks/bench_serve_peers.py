"""Serving benchmark, one server at a time: athanor serve, llama-cpp-python's server and llama.cpp's llama-server on
the same GGUF file (the built-in SmolLM2 Q4_1), each started as its own process, measured alone, then stopped.

Same load as bench_serve.py (`run_level`: streamed chats of --max-tokens greedy tokens with `ignore_eos`, after a
warm-up request). A peer is skipped when its program is not given.

Usage: python benchmarks/bench_serve_peers.py [--concurrency 1,8,32] [--requests-per-level 16] [--max-tokens 64]
       [--llama-cpp-python /path/to/venv/bin/python] [--llama-server /path/to/llama-server] [--threads 2]
Record the table in benchmarks/RESULTS.md with date, machine (`uptime` quiet?) and command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from bench_serve import run_level

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server did not become ready")


def servers(args, gguf: str) -> list[tuple[str, list[str], str]]:
    """(name, command with {port}, model name) for every server to measure."""
    out = [("athanor serve (--weights auto)",
            [str(Path(sys.executable).with_name("athanor")), "serve", "--port", "{port}"], "smollm2")]
    if args.llama_cpp_python:
        out.append(("llama-cpp-python server", [args.llama_cpp_python, "-m", "llama_cpp.server", "--model", gguf,
                    "--model_alias", "smollm2", "--n_threads", str(args.threads), "--n_ctx", "4096",
                    "--port", "{port}"], "smollm2"))
    if args.llama_server:
        slots = max(int(c) for c in args.concurrency.split(","))
        out.append((f"llama.cpp llama-server -np {slots}", [args.llama_server, "-m", gguf, "--alias", "smollm2",
                    "-t", str(args.threads), "-np", str(slots), "-c", str(512 * slots), "--port", "{port}"],
                    "smollm2"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--requests-per-level", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--llama-cpp-python", default=None, help="a python with llama-cpp-python[server] installed")
    ap.add_argument("--llama-server", default=None, help="llama.cpp's llama-server binary")
    args = ap.parse_args()
    from tests.conftest import builtin_gguf_path

    gguf = str(builtin_gguf_path())
    levels = [int(c) for c in args.concurrency.split(",")]
    print(f"GGUF: {gguf}")
    print("| server | conc | reqs | failed | tokens | TTFT p50 ms | TPOT ms | ITL p50 ms | ITL p99 ms | out tok/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, cmd, model in servers(args, gguf):
        port = free_port()
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        proc = subprocess.Popen([c.replace("{port}", str(port)) for c in cmd], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/v1"
        try:
            wait_ready(url, proc)
            for c in levels:
                n = max(c, args.requests_per_level)
                r = asyncio.run(run_level(url, model, c, n, args.max_tokens))
                print(f"| {name} | {c} | {n} | {r['failed']} | {r['tokens']} | {r['ttft_p50_ms']:.0f} | "
                      f"{r['tpot_ms']:.1f} | {r['itl_p50_ms']:.1f} | {r['itl_p99_ms']:.1f} | {r['output_tok_s']:.1f} |",
                      flush=True)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
