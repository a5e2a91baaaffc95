"""Short prefill chunks, fused C stack vs per-op PyTorch, in-process: the compute behind a chat's first token.

A chat after a prefix-cache hit prefills only its new tokens (~18 in bench_serve_peers.py's chats). This times
one step of N new tokens after a 30-token cached prefix, through the fused decode stack as rows of one sequence
(nn/llama.fused_step, the default up to 64 tokens) and through the per-op path (`fused_chunk_tokens = 0`),
interleaved A/B on one model so a busy machine slows both alike; wall and CPU ms are medians of --repeats. Also
the largest logit difference between the two and whether their argmax agrees.

    PYTHONPATH=. python benchmarks/bench_short_prefill.py [--model smollm2|gemma3] [--sizes 1,2,8,18,32,64]
        [--repeats 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["smollm2", "gemma3"], default="smollm2")
    ap.add_argument("--sizes", default="1,2,8,18,32,64")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from bench_gguf_models import model_path

    from athanor.engine.config import EngineConfig
    from athanor.engine.sampling_params import SamplingParams
    from athanor.engine.sequence import Sequence
    from athanor.runtime.llm import LLM

    with tempfile.TemporaryDirectory() as tmp:
        llm = LLM.load(model_path(args.model, Path(tmp)), EngineConfig())
        engine, runner = llm.engine, llm.engine.runner
        model, fused = runner.model, runner.model.fused_chunk_tokens
        print(f"{args.model}, {args.threads} threads, 30 cached tokens; fused up to {fused} tokens per sequence")
        print("| new tokens | fused wall ms | fused CPU ms | per-op wall ms | per-op CPU ms | max abs logit diff | argmax same |")
        print("|---|---|---|---|---|---|---|")
        for n in (int(s) for s in args.sizes.split(",")):
            start = 100 + 500 * n  # tokens no earlier size shares: no prefix-cache hit
            seq = Sequence(list(range(start, start + 30 + n)), SamplingParams(max_tokens=1))
            engine.block_manager.allocate(seq)
            assert seq.num_computed_tokens == 0
            runner.run([(seq, 30)])  # the cached prefix
            seq.num_computed_tokens = 30
            times: dict[int, list] = {fused: [], 0: []}
            logits = {}
            for _ in range(args.repeats):
                for limit in (fused, 0):  # the same slots rewritten: every repeat computes the same step
                    model.fused_chunk_tokens = limit
                    w, c = time.perf_counter(), time.process_time()
                    logits[limit] = runner.run([(seq, n)])
                    times[limit].append((1000 * (time.perf_counter() - w), 1000 * (time.process_time() - c)))
            model.fused_chunk_tokens = fused
            engine.block_manager.free(seq)
            a, b = times[fused], times[0]
            diff = float((logits[fused] - logits[0]).abs().max())
            same = bool(torch.equal(logits[fused].argmax(-1), logits[0].argmax(-1)))
            med = lambda xs, i: statistics.median(x[i] for x in xs)
            print(f"| {n} | {med(a, 0):.1f} | {med(a, 1):.1f} | {med(b, 0):.1f} | {med(b, 1):.1f} | {diff:.2e} | {same} |",
                  flush=True)


if __name__ == "__main__":
    main()
