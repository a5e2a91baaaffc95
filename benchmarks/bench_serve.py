"""Serving benchmark: TTFT, time per output token, inter-token latency p50/p99 and output tokens/s at several
concurrency levels, over the OpenAI streaming API, against athanor serve and (same run) a peer server.

Every request streams a chat completion with a fixed number of output tokens (`ignore_eos`, greedy) so
every server does the same work. The peer is any OpenAI-compatible server on the same GGUF file, e.g.
llama.cpp's: `python -m llama_cpp.server --model $(python -c "from tests.conftest import builtin_gguf_path as p;
print(p())") --port 8001` (llama.cpp ignores `ignore_eos`: check the tokens column matches).

Usage: python benchmarks/bench_serve.py [--concurrency 1,8,32] [--requests-per-level 32] [--max-tokens 64]
       [--url http://127.0.0.1:11435/v1] [--peer-url http://127.0.0.1:8001/v1 --peer-model NAME]
Without --url an athanor server is started in this process on a free port. Record the printed table in
benchmarks/RESULTS.md with date, machine (`uptime` idle?) and command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import statistics
import time

import httpx

from bench_engine import PROMPTS  # the same workload as the engine benchmark


class NoResponse(Exception):
    """The connection failed before any response: llama-server (cpp-httplib) closes a kept-alive connection now and
    then just as the client reuses it ("Server disconnected without sending a response"); SDK clients retry it."""


async def one_request(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    arrivals, tokens = [], 0
    answered = False
    try:
        async with client.stream("POST", f"{url}/chat/completions", json=body) as r:
            answered = True
            r.raise_for_status()
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                    arrivals.append(time.perf_counter())
    except (httpx.RemoteProtocolError, httpx.ConnectError, httpx.ReadError) as e:
        if not answered:
            raise NoResponse(str(e)) from e
        raise
    end = time.perf_counter()
    return {"ttft": arrivals[0] - t0 if arrivals else end - t0, "end": end - t0, "tokens": tokens or len(arrivals),
            "itl": [b - a for a, b in itertools.pairwise(arrivals)]}


async def run_level(url: str, model: str, concurrency: int, num_requests: int, max_tokens: int) -> dict:
    sem = asyncio.Semaphore(concurrency)
    retried = [0]
    async with httpx.AsyncClient(timeout=600) as client:
        async def limited(i: int) -> dict | None:
            async with sem:
                for attempt in range(2):
                    try:
                        return await one_request(client, url, model, PROMPTS[i % len(PROMPTS)], max_tokens)
                    except NoResponse:  # a kept-alive connection the server had closed: sent again, as clients do
                        retried[0] += attempt == 0
                        if attempt:
                            return None
                    except httpx.HTTPError:  # a server that drops a stream: counted, not fatal
                        return None

        await one_request(client, url, model, PROMPTS[0], 4)  # warm-up: model loaded, caches touched
        t0 = time.perf_counter()
        outcomes = await asyncio.gather(*(limited(i) for i in range(num_requests)))
        wall = time.perf_counter() - t0
    results = [r for r in outcomes if r is not None]
    if not results:
        return {"concurrency": concurrency, "requests": num_requests, "failed": num_requests, "tokens": 0,
                "retried": retried[0],
                **{k: float("nan") for k in ("ttft_p50_ms", "tpot_ms", "itl_p50_ms", "itl_p99_ms")}, "output_tok_s": 0.0}
    itl = sorted(x for r in results for x in r["itl"])
    tokens = sum(r["tokens"] for r in results)
    return {"concurrency": concurrency, "requests": num_requests, "failed": num_requests - len(results), "tokens": tokens,
            "retried": retried[0],
            "ttft_p50_ms": 1000 * statistics.median(r["ttft"] for r in results),
            "tpot_ms": 1000 * statistics.mean((r["end"] - r["ttft"]) / max(1, r["tokens"] - 1) for r in results),
            "itl_p50_ms": 1000 * _pct(itl, 0.50), "itl_p99_ms": 1000 * _pct(itl, 0.99),
            "output_tok_s": tokens / wall}


def _pct(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


@contextlib.contextmanager
def local_server():
    """athanor serve in this process (uvicorn in a thread) on a free port."""
    from athanor.serve.app import create_app
    from athanor.serve.background import serve_in_thread

    with serve_in_thread(create_app()) as (url, _):
        yield url + "/v1"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--requests-per-level", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--url", default=None, help="a running athanor serve (…/v1); default: start one here")
    ap.add_argument("--peer-url", default=None, help="an OpenAI-compatible peer (…/v1), e.g. llama.cpp's server")
    ap.add_argument("--peer-model", default=None)
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(local_server())
        targets = [("athanor", url, args.model)]
        if args.peer_url:
            targets.append(("peer", args.peer_url, args.peer_model or args.model))
        print("| server | conc | reqs | failed (retried) | tokens | TTFT p50 ms | TPOT ms | ITL p50 ms | ITL p99 ms | out tok/s |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, target, model in targets:
            for c in levels:
                n = max(c, args.requests_per_level)
                r = asyncio.run(run_level(target, model, c, n, args.max_tokens))
                print(f"| {name} | {c} | {n} | {r['failed']} ({r['retried']}) | {r['tokens']} | {r['ttft_p50_ms']:.0f} | {r['tpot_ms']:.1f} | "
                      f"{r['itl_p50_ms']:.1f} | {r['itl_p99_ms']:.1f} | {r['output_tok_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
