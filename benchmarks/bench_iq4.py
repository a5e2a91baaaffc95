"""IQ4_NL / IQ4_XS (and K-quant) GGUF files of SmolLM2 run by athanor (nn/gguf_kernels.c, blocks kept, the fused
decode stack) next to llama.cpp: greedy agreement with llama-server and batch-1 decode speed against llama-bench, on
the same files and thread count.

    python benchmarks/bench_iq4.py [--llama-bin DIR] [--threads 2] [--tokens 64] [--rounds 3]
                                   [--types IQ4_XS IQ4_NL Q4_K_M]

The files are made by llama.cpp's llama-quantize from SmolLM2 written as F16 (its built-in Q4_1 dequantized, as
tests/models/test_quantize_quality.py does), in a temp dir. Greedy: each prompt's 32 tokens from athanor and from
llama-server (the same prompt token ids, temperature 0); where they part, athanor's log-prob margin between its
token and llama.cpp's (a near-tie is rounding, not a bug). Speed, rounds interleaved, one fresh process per run:
athanor's decode tok/s and CPU ms per token (process CPU time over the decode, all threads), llama-bench's tg tok/s
(-p 0 -n TOKENS) and its CPU ms per token (the child's CPU time over its runs, load and warm-up included: an upper
bound). Prints a markdown table of medians with the load average. Not a correctness check (tests/nn/test_iq4_model.py,
tests/nn/test_gguf_matmul.py are). Needs llama.cpp built (default: the build vendored in llama-cpp-python's source).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,",
           "The three primary colors are", "Water boils at a temperature of"]
DEFAULT_BIN = "/work/lcp/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin"

ATHANOR = r"""
import json, time, torch
torch.set_num_threads({threads})
from athanor.engine.config import EngineConfig
from athanor.runtime.llm import LLM
llm = LLM.load({path!r}, EngineConfig(kv_cache_bytes=64 * 2**20))
params = {{"max_tokens": {tokens}, "temperature": 0, "ignore_eos": True}}
llm.generate(["The history of the printing press begins in"], {{**params, "max_tokens": 4}})  # warm-up
c0 = time.process_time()
c = llm.generate(["The history of the printing press begins in"], params)[0]
cpu = time.process_time() - c0
print(json.dumps({{"decode_tps": (len(c.token_ids) - 1) / c.decode_seconds, "cpu_ms_per_tok": 1000 * cpu / len(c.token_ids)}}))
"""


def _env(bin_dir: str, threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads),
            "LD_LIBRARY_PATH": f"{bin_dir}:{os.environ.get('LD_LIBRARY_PATH', '')}"}


def make_files(bin_dir: str, types: list[str], tmp: Path) -> dict[str, Path]:
    from athanor.models.gguf_export import write_gguf_file
    from athanor.models.loader import load_checkpoint
    from athanor.models.store import Store

    f16 = tmp / "smol-f16.gguf"
    write_gguf_file(load_checkpoint(Store().resolve("smollm2").weights), f16, "F16")
    out = {}
    for t in types:
        out[t] = tmp / f"smol-{t}.gguf"
        subprocess.run([f"{bin_dir}/llama-quantize", str(f16), str(out[t]), t, "2"], check=True, capture_output=True,
                       env=_env(bin_dir, 2))
    return out


def athanor_speed(path: Path, threads: int, tokens: int) -> dict:
    code = ATHANOR.format(path=str(path), threads=threads, tokens=tokens)
    proc = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def llama_bench_speed(bin_dir: str, path: Path, threads: int, tokens: int) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([f"{bin_dir}/llama-bench", "-m", str(path), "-p", "0", "-n", str(tokens), "-t", str(threads),
                           "-r", "1", "-o", "json"], check=True, capture_output=True, text=True, timeout=900,
                          env=_env(bin_dir, threads))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    row = json.loads(proc.stdout)[0]
    return {"decode_tps": row["avg_ts"], "cpu_ms_per_tok": 1000 * cpu / tokens, "build": row.get("build_commit")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def llama_server_greedy(bin_dir: str, path: Path, prompts: list[list[int]], n: int, threads: int) -> list[list[int]]:
    port = _free_port()
    server = subprocess.Popen([f"{bin_dir}/llama-server", "-m", str(path), "--host", "127.0.0.1", "--port", str(port),
                               "-t", str(threads), "-c", "1024", "-np", "1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=_env(bin_dir, threads))
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("llama-server did not come up") from None
                time.sleep(0.2)
        return [_post(f"http://127.0.0.1:{port}/completion", {
            "prompt": ids, "n_predict": n, "temperature": 0, "top_k": 1, "cache_prompt": False,
            "return_tokens": True, "ignore_eos": True})["tokens"] for ids in prompts]
    finally:
        server.terminate()
        server.wait(timeout=30)


def greedy_report(bin_dir: str, path: Path, threads: int, n: int = 32) -> list[str]:
    import torch

    from athanor.engine.config import EngineConfig
    from athanor.engine.sampling_params import SamplingParams
    from athanor.quantize_cli import _log_probs
    from athanor.runtime.llm import LLM

    torch.set_num_threads(threads)
    llm = LLM.load(str(path), EngineConfig(kv_cache_bytes=64 * 2**20))
    prompts = [llm.tokenizer.encode(p) for p in PROMPTS]
    ours = [o.token_ids for o in llm.generate_ids(prompts, SamplingParams(temperature=0, max_tokens=n, ignore_eos=True))]
    theirs = llama_server_greedy(bin_dir, path, prompts, n, threads)
    lines = []
    for p, ids, a, b in zip(PROMPTS, prompts, ours, theirs, strict=True):
        same = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        note = "identical" if same == n else f"part at token {same}"
        if same < n:
            with torch.inference_mode():
                lp = _log_probs(llm.engine.runner.model, ids + a[: same + 1])[len(ids) - 1 + same]
            note += f" (athanor's log-prob margin of its pick over llama.cpp's: {float(lp[a[same]] - lp[b[same]]):.3f})"
        lines.append(f"| {p!r} | {note} | {llm.tokenizer.decode(a)!r} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-bin", default=os.environ.get("LLAMA_CPP_BIN", DEFAULT_BIN))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--types", nargs="+", default=["IQ4_XS", "IQ4_NL", "Q4_K_M"])
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()}; threads {args.threads}; {args.tokens} decode tokens")
    with tempfile.TemporaryDirectory() as tmp:
        files = make_files(args.llama_bin, args.types, Path(tmp))
        for t, path in files.items():
            print(f"\n### SmolLM2 {t} (llama-quantize, {path.stat().st_size / 2**20:.1f} MiB)\n")
            print("| prompt | greedy vs llama-server | athanor's text |\n|---|---|---|")
            print("\n".join(greedy_report(args.llama_bin, path, args.threads)))
            runs: dict[str, list[dict]] = {"athanor": [], "llama-bench": []}
            for _ in range(args.rounds):
                runs["athanor"].append(athanor_speed(path, args.threads, args.tokens))
                runs["llama-bench"].append(llama_bench_speed(args.llama_bin, path, args.threads, args.tokens))
            print("\n| engine | decode tok/s | CPU ms/tok |\n|---|---|---|")
            for engine, rows in runs.items():
                label = f"{engine} {rows[0].get('build') or ''}".strip()
                print(f"| {label} | {statistics.median(r['decode_tps'] for r in rows):.1f} | "
                      f"{statistics.median(r['cpu_ms_per_tok'] for r in rows):.2f} |")
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
