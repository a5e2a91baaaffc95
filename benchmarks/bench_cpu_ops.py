"""Decode step time of the built-in model on the CPU, three ways in one process, alternating so load drifts hit all
alike: the whole decoder stack in one C call (nn/cpu_ops.py DecodeStack, the default for --weights auto), one C call
per fused op, and PyTorch only (SDPA, F.rms_norm, ...). Same q4_1 matmul kernels in all three.

Usage: python benchmarks/bench_cpu_ops.py [--batch 1,8] [--new-tokens 48] [--rounds 4] [--threads 2]
Prints per mode the median ms per decode step and whether the greedy tokens were identical across modes.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from bench_engine import PROMPTS


def set_mode(model, mode: str) -> None:
    from athanor.nn.layers import RMSNorm, SwiGLU

    if mode == "torch":
        model.cpu_ops, model.decode_stack = False, None
        for m in model.modules():
            if isinstance(m, (RMSNorm, SwiGLU)):
                m.cpu_ops = False
        return
    assert model.enable_cpu_ops(), "cpu ops unavailable"
    if mode == "ops":
        model.decode_stack = None


def main() -> None:
    from athanor.engine.config import EngineConfig
    from athanor.runtime.llm import LLM
    from athanor.engine.sampling_params import SamplingParams

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    llm = LLM.load("smollm2", EngineConfig(device="cpu", max_num_seqs=32, weight_dtype="auto"))
    model = llm.engine.runner.model
    params = SamplingParams(temperature=0, max_tokens=args.new_tokens, min_tokens=args.new_tokens)
    print("| batch | mode | ms per decode step (median of rounds) | rounds | same tokens as stack |")
    print("|---|---|---|---|---|")
    for batch in (int(b) for b in args.batch.split(",")):
        prompts = [llm.chat_prompt([{"role": "user", "content": PROMPTS[i % len(PROMPTS)] + f" (#{i})"}])
                   for i in range(batch)]
        times: dict[str, list[float]] = {"stack": [], "ops": [], "torch": []}
        tokens = {}
        llm.generate_ids(prompts, SamplingParams(temperature=0, max_tokens=2))  # warm-up
        for _ in range(args.rounds):
            for mode, samples in times.items():
                set_mode(model, mode)
                t0 = time.perf_counter()
                outs = llm.generate_ids(prompts, params)
                total = time.perf_counter() - t0
                first = max(o.prompt_seconds for o in outs)
                samples.append(1000 * (total - first) / (args.new_tokens - 1))
                tokens[mode] = [o.token_ids for o in outs]
        for mode, ts in times.items():
            print(f"| {batch} | {mode} | {statistics.median(ts):.1f} | {', '.join(f'{t:.1f}' for t in ts)} | "
                  f"{tokens[mode] == tokens['stack']} |", flush=True)
    set_mode(model, "stack")


if __name__ == "__main__":
    main()
