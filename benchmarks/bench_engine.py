"""Engine throughput vs transformers on the built-in SmolLM2-135M-Instruct, same weights, same run.

Measures (greedy, fixed output length so both sides do the same work):
  1. batch-1 decode tokens/s: ours vs transformers `generate`
  2. 16 concurrent requests: our aggregate tokens/s vs transformers batch-1 tokens/s
  3. cold start: `athanor run smollm2 "hi"` in a fresh process to its first streamed token

Usage: python benchmarks/bench_engine.py [--new-tokens 128] [--concurrent 16] [--device cpu] [--skip-hf]
       [--weight-dtypes float32,float16]
Record the printed table in benchmarks/RESULTS.md with date, machine and command.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

import torch

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a refrigerator works.",
    "What are the benefits of learning a second language?",
    "Describe the water cycle for a ten-year-old.",
    "Give me a recipe for pancakes.",
    "Why is the sky blue?",
    "Summarize the plot of Romeo and Juliet.",
    "How do vaccines train the immune system?",
]


def our_llm(device: str, weight_dtype: str):
    from athanor.engine.config import EngineConfig
    from athanor.runtime.llm import LLM

    return LLM.load("smollm2", EngineConfig(device=device, max_num_seqs=32, weight_dtype=weight_dtype))


def chat_ids(llm, i: int) -> list[int]:
    return llm.chat_prompt([{"role": "user", "content": PROMPTS[i % len(PROMPTS)] + f" (#{i})"}])


def ours_decode_tps(llm, prompts: list[list[int]], new_tokens: int) -> tuple[float, float]:
    """(decode tokens/s excluding the first token of each request, end-to-end tokens/s)."""
    from athanor.engine.sampling_params import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=new_tokens, min_tokens=new_tokens)
    llm.generate_ids([prompts[0]], SamplingParams(temperature=0, max_tokens=4))  # warm-up
    t0 = time.perf_counter()
    outs = llm.generate_ids(prompts, params)
    total = time.perf_counter() - t0
    assert all(len(o.token_ids) == new_tokens for o in outs)
    first = max(o.prompt_seconds for o in outs)  # all prompts are prefilled before decoding settles
    decode_tokens = sum(len(o.token_ids) - 1 for o in outs)
    return decode_tokens / (total - first), sum(len(o.token_ids) for o in outs) / total


def hf_decode_tps(path, ids: list[int], new_tokens: int, device: str) -> float:
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, torch_dtype=torch.float32).to(device).eval()
    x = torch.tensor([ids], device=device)
    kw = dict(do_sample=False, pad_token_id=2)
    with torch.no_grad():
        model.generate(x, max_new_tokens=4, **kw)  # warm-up
        t0 = time.perf_counter()
        model.generate(x, max_new_tokens=1, min_new_tokens=1, **kw)
        t_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = model.generate(x, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kw)
        total = time.perf_counter() - t0
    assert out.shape[1] - x.shape[1] == new_tokens
    return (new_tokens - 1) / (total - t_first)


def cold_start_seconds() -> float:
    """Fresh process: `athanor run smollm2 hi` until the first streamed character arrives."""
    exe = os.path.join(os.path.dirname(sys.executable), "athanor")
    t0 = time.perf_counter()
    proc = subprocess.Popen([exe, "run", "smollm2", "-o", "temperature=0", "-o", "num_predict=8", "hi"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    proc.stdout.read(1)
    first = time.perf_counter() - t0
    proc.wait()
    return first


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--concurrent", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--weight-dtypes", default="float32,float16", help="our weight formats to measure, comma-separated")
    args = ap.parse_args()
    from athanor.models.builtin import smollm2_path

    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    cold = cold_start_seconds()
    rows = []
    for weight_dtype in args.weight_dtypes.split(","):
        llm = our_llm(args.device, weight_dtype)
        one = [chat_ids(llm, 0)]
        many = [chat_ids(llm, i) for i in range(args.concurrent)]
        ours1, _ = ours_decode_tps(llm, one, args.new_tokens)
        oursN, oursN_e2e = ours_decode_tps(llm, many, args.new_tokens)
        rows.append((weight_dtype, ours1, oursN, oursN_e2e))
        del llm
    hf1 = float("nan") if args.skip_hf else hf_decode_tps(smollm2_path(), one[0], args.new_tokens, args.device)
    print("\n| measurement | athanor | transformers (fp32) | ratio |\n|---|---|---|---|")
    for w, ours1, oursN, oursN_e2e in rows:
        print(f"| batch-1 decode tok/s, weights {w} ({args.new_tokens} new) | {ours1:.1f} | {hf1:.1f} | {ours1 / hf1:.2f}x |")
        print(f"| {args.concurrent} concurrent, aggregate decode tok/s, weights {w} | {oursN:.1f} | {hf1:.1f} (batch-1) | {oursN / hf1:.2f}x |")
        print(f"| {args.concurrent} concurrent, aggregate end-to-end tok/s incl. prefill, weights {w} | {oursN_e2e:.1f} | | |")
    print(f"| cold start `athanor run smollm2 hi` to first token (default weights) | {cold:.2f} s | | |")

if __name__ == "__main__":
    main()
