"""Quantized matmul (athanor.nn.quant, Q4_1 / Q8_0; fp32 and int8 activations) vs FBGEMM fp16 and fp32 `x @ w.t()`
on SmolLM2-135M shapes.

    python benchmarks/bench_qmatmul.py [--threads 2] [--rounds 7] [--ms 20] [--cold] [--batches 1 8]

Prints a markdown table of µs per call (median over interleaved rounds: the machine may be shared, so
every method is timed once per round, in turn). Not a correctness check (tests/nn/test_quant.py is).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import statistics
import subprocess
import time
import warnings

import torch

from athanor.nn import quant

# (in_features, out_features): q/o proj, k+v... as SmolLM2-135M's decoder uses them; 49152 = lm_head
SHAPES = [(576, 960), (576, 576), (576, 3072), (1536, 576), (576, 49152)]
BATCHES = [1, 8, 128, 512]
MAX_LM_HEAD_M = 8  # lm_head runs on the last position only; fp32 at M=512 would take ~0.5 s a call
COLD_BYTES = 96 << 20  # 3x this machine's 32 MiB L3


def make_methods(w: torch.Tensor, cold: bool) -> dict[str, list]:
    """Per method, calls that each use their own copy of the weight: with `cold`, enough copies to
    exceed the L3 cache COLD_BYTES-fold over, so every call reads its weights from DRAM as decode does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pack = torch.fbgemm_pack_gemm_matrix_fp16
        q4, q8 = quant.QuantizedWeight.quantize(w, "q4_1"), quant.QuantizedWeight.quantize(w, "q8_0")

        def copies(nbytes: int) -> int:
            return max(2, -(-COLD_BYTES // nbytes)) if cold else 1

        def clone(qw):
            return quant.QuantizedWeight(qw.blocks.clone(), qw.kind, qw.out_features, qw.in_features)

        def qcalls(qw, activations):
            n = copies(qw.nbytes)
            return [functools.partial(quant.qmatmul, w=clone(qw), activations=activations) for _ in range(n)]

        return {
            "q4_1 f32": qcalls(q4, "f32"),
            "q4_1 int8": qcalls(q4, "int8"),
            "q8_0 f32": qcalls(q8, "f32"),
            "q8_0 int8": qcalls(q8, "int8"),
            "fp16 fbgemm": [functools.partial(_fp16, packed=pack(w)) for _ in range(copies(w.numel() * 2))],
            "fp32": [functools.partial(torch.matmul, other=w.clone().t()) for _ in range(copies(w.numel() * 4))],
        }


def _fp16(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    return torch.fbgemm_linear_fp16_weight_fp32_activation(x, packed, None)


def time_batch(fns: list, x: torch.Tensor, reps: int) -> float:
    t0 = time.perf_counter()
    for k in range(reps):
        fns[k % len(fns)](x)
    return (time.perf_counter() - t0) / reps * 1e6


def bench(K: int, N: int, M: int, rounds: int, target_ms: float, cold: bool) -> dict[str, float]:
    torch.manual_seed(0)
    w, x = torch.randn(N, K) * 0.05, torch.randn(M, K)
    methods = make_methods(w, cold)
    reps = {}
    for name, fns in methods.items():  # warm up, and pick reps so one batch takes ~target_ms
        fns[0](x)
        once = time_batch(fns, x, 1)
        reps[name] = max(len(fns) if cold else 1, int(target_ms * 1e3 / max(once, 1.0)))
    samples: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, fns in methods.items():
            samples[name].append(time_batch(fns, x, reps[name]))
    return {name: statistics.median(s) for name, s in samples.items()}


def _uptime() -> str:
    return subprocess.run(["uptime"], check=False, capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--ms", type=float, default=20.0, help="target milliseconds per timed batch")
    ap.add_argument("--cold", action="store_true", help="weights from DRAM (many copies), as in decode")
    ap.add_argument("--batches", type=int, nargs="+", default=BATCHES)
    args = ap.parse_args()
    if not quant.available():
        raise SystemExit(f"quantized kernels unavailable: {quant.unavailable_reason()}")
    torch.set_num_threads(args.threads)
    uptime = _uptime()
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}, torch {torch.__version__}, "
          f"{args.threads} threads, {'cold (weights from DRAM)' if args.cold else 'warm (weights in cache)'}, uptime: {uptime}\n")
    print("| in x out | M | q4_1 f32 µs | q4_1 int8 µs | q8_0 f32 µs | q8_0 int8 µs | fp16 FBGEMM µs | fp32 µs "
          "| fp16 / q4_1 f32 | fp16 / q8_0 f32 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for K, N in SHAPES:
        for M in args.batches:
            if N == 49152 and M > MAX_LM_HEAD_M:
                continue
            r = bench(K, N, M, args.rounds, args.ms, args.cold)
            cells = " | ".join(f"{r[name]:.0f}" for name in ("q4_1 f32", "q4_1 int8", "q8_0 f32", "q8_0 int8",
                                                                "fp16 fbgemm", "fp32"))
            print(f"| {K}x{N} | {M} | {cells} | {r['fp16 fbgemm'] / r['q4_1 f32']:.2f} | "
                  f"{r['fp16 fbgemm'] / r['q8_0 f32']:.2f} |", flush=True)
    print(f"\nuptime after: {_uptime()}")


if __name__ == "__main__":
    main()
