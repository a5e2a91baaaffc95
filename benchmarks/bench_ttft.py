"""In-process time to first token of SmolLM2 chats (the serve benchmark's prompts), by prefix-cache mode.

Each request is a fresh chat (bench_engine.PROMPTS) sharing the default system prompt and the user header with
the others, run with max_tokens=1 on engines that share one model: no prefix cache, whole-block reuse only (the
token-granular part switched off in this process), and token-granular reuse (the engine's default). Modes are
interleaved request by request, so a busy machine slows them alike; wall and CPU ms are medians. Also the time
to render the chat template and tokenize one prompt.

    cd benchmarks && PYTHONPATH=..:. python bench_ttft.py [--requests 24] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time


def _block_granular(engine) -> None:
    """Switch token-granular reuse off in this engine: whole-block hits only (the engine before it)."""
    bm = engine.block_manager
    bm._partial_hit = lambda parent, tokens: None
    bm._keep_tail = lambda seq: None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from bench_engine import chat_ids, our_llm

    from athanor.engine.config import EngineConfig
    from athanor.engine.engine import LLMEngine
    from athanor.engine.sampling_params import SamplingParams

    llm = our_llm("cpu", "auto")
    model, eos = llm.engine.runner.model, set(llm.engine.eos_token_ids)
    engines = {
        "no prefix cache": LLMEngine(model, EngineConfig(enable_prefix_caching=False), eos),
        "whole blocks": LLMEngine(model, EngineConfig(), eos),
        "token-granular": LLMEngine(model, EngineConfig(), eos),
    }
    _block_granular(engines["whole blocks"])
    t0 = time.perf_counter()
    prompts = [chat_ids(llm, i) for i in range(args.requests + 1)]
    template_ms = 1000 * (time.perf_counter() - t0) / len(prompts)
    one = SamplingParams(temperature=0, max_tokens=1)
    for e in engines.values():
        e.generate([prompts[0]], one)  # warm-up, and the first chat every later one shares a prefix with
    rows: dict[str, list[tuple[float, float, int]]] = {k: [] for k in engines}
    for p in prompts[1:]:
        for name, e in engines.items():
            w, c = time.perf_counter(), time.process_time()
            seq = e.generate([p], one)[0]
            rows[name].append((1000 * (time.perf_counter() - w), 1000 * (time.process_time() - c), seq.num_cached_tokens))
    print(f"prompts: {len(prompts) - 1} chats of {min(map(len, prompts))}-{max(map(len, prompts))} tokens; "
          f"template + tokenize {template_ms:.2f} ms per prompt; {args.threads} threads")
    print("| prefix cache | prefill wall p50 ms | prefill CPU p50 ms | cached tokens p50 |")
    print("|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {statistics.median(x[0] for x in r):.1f} | {statistics.median(x[1] for x in r):.1f} | "
              f"{statistics.median(x[2] for x in r):.0f} |")


if __name__ == "__main__":
    main()
