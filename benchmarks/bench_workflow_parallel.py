"""Workflow engine: two 1-second code branches in parallel vs the same two nodes in a chain.

Both graphs are Dify DSL documents run by athanor.workflow.engine; each code node runs `time.sleep(1)` in the
sandbox (its own process), so the parallel graph should take ~1 s plus sandbox start-up, the chain ~2 s.
Run: python benchmarks/bench_workflow_parallel.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

SLEEP = "import time\ndef main() -> dict:\n    time.sleep(1)\n    return {'done': True}\n"


def _doc(parallel: bool) -> dict:
    def code(node_id):
        return {"id": node_id, "data": {"type": "code", "title": node_id, "code_language": "python3", "code": SLEEP,
                                        "variables": [], "outputs": {"done": {"type": "boolean"}}}}

    def edge(a, b):
        return {"id": f"{a}-{b}", "source": a, "sourceHandle": "source", "target": b, "targetHandle": "target"}

    nodes = [{"id": "start", "data": {"type": "start", "title": "Start", "variables": []}}, code("a"), code("b"),
             {"id": "end", "data": {"type": "end", "title": "End", "outputs": [
                 {"variable": "a", "value_selector": ["a", "done"]}, {"variable": "b", "value_selector": ["b", "done"]}]}}]
    edges = ([edge("start", "a"), edge("start", "b"), edge("a", "end"), edge("b", "end")] if parallel else
             [edge("start", "a"), edge("a", "b"), edge("b", "end")])
    return {"version": "0.3.1", "kind": "app", "app": {"name": "bench", "mode": "workflow"},
            "workflow": {"graph": {"nodes": nodes, "edges": edges}, "features": {}}}


def timed(doc: dict) -> float:
    from athanor.workflow.dsl import load_app
    from athanor.workflow.engine import run_workflow

    app = load_app(doc)
    began = time.perf_counter()
    result = run_workflow(app, {})
    elapsed = time.perf_counter() - began
    assert result.status == "succeeded" and result.outputs == {"a": True, "b": True}, result.error
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    timed(_doc(True))  # warm-up: imports, sandbox trial run
    par = [timed(_doc(True)) for _ in range(args.repeat)]
    seq = [timed(_doc(False)) for _ in range(args.repeat)]
    print(f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}")
    print(f"parallel (2 x 1 s branches): median {statistics.median(par):.3f} s  (runs: "
          + ", ".join(f"{t:.3f}" for t in par) + ")")
    print(f"chain    (2 x 1 s in a row): median {statistics.median(seq):.3f} s  (runs: "
          + ", ".join(f"{t:.3f}" for t in seq) + ")")
    print(f"speed-up: {statistics.median(seq) / statistics.median(par):.2f}x")


if __name__ == "__main__":
    main()
