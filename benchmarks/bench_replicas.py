"""Throughput of `athanor serve --replicas N` (Ray Serve, serve/ray_app.py) at 1 vs 2 replicas, same run.

Each setting: a fresh Serve app with N engine replicas (1 CPU each: Ray gives each replica OMP_NUM_THREADS=1) of
the built-in smollm2, a warm-up request per replica, then `--requests` chat completions with `--concurrency` in
flight through the real `openai` client, distinct conversations (no prefix sharing), fixed output length
(ignore_eos). Reports aggregate generated tokens/s and p50 latency. On a 2-core machine two replicas compete
for the same cores as the proxy, the gateway and the client: expect little gain.

Run: python benchmarks/bench_replicas.py [--model smollm2] [--requests 32] [--concurrency 8] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import statistics
import time


def run_setting(num_replicas: int, args) -> dict:
    import openai
    from ray import serve

    from athanor.serve.ray_app import ReplicaOptions, ScaleOptions, build_app

    serve.run(build_app(ReplicaOptions(app_kwargs={"keep_alive": -1.0}),
                        ScaleOptions(num_replicas=num_replicas, num_cpus_per_replica=1)))
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{args.port}/v1", api_key="none", timeout=600, max_retries=0)

    def one(i: int) -> tuple[float, int]:
        t = time.perf_counter()
        r = client.chat.completions.create(model=args.model, max_tokens=args.max_tokens, temperature=0,
                                           messages=[{"role": "user", "content": f"Write about topic number {i}."}],
                                           extra_body={"ignore_eos": True})
        return time.perf_counter() - t, r.usage.completion_tokens

    with cf.ThreadPoolExecutor(num_replicas * 2) as pool:  # warm: every replica loads the model
        list(pool.map(one, range(-num_replicas * 2, 0)))
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(args.concurrency) as pool:
        results = list(pool.map(one, range(args.requests)))
    wall = time.perf_counter() - t0
    serve.delete("default")
    tokens = sum(n for _, n in results)
    return {"replicas": num_replicas, "tokens": tokens, "wall_s": round(wall, 2), "tok_per_s": round(tokens / wall, 1),
            "p50_latency_s": round(statistics.median(t for t, _ in results), 2)}


def main() -> None:
    import ray
    from ray import serve

    from athanor.serve.ray_app import free_port

    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2")
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--replicas", default="1,2")
    args = p.parse_args()
    args.port = free_port()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    for n in (int(x) for x in args.replicas.split(",")):
        print(run_setting(n, args), flush=True)
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
