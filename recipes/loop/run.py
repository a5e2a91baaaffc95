"""The LLMOps loop on the built-in model, end to end on CPU: traffic -> traces -> feedback -> dataset -> LoRA ->
eval against the serving model -> promote.

Stages (each timed; the report gives wall seconds per stage):
  1. traffic   the calculator agent (recipes/calculator: the native tool-calling agent with the real calculator)
               answers N training questions through the serving alias ("prod" -> smollm2), tracing on: each
               question is one trace (agent, steps, llm calls with their messages, tool calls).
  2. feedback  each run is scored automatically (calculator_eval.score_events: the final number is right);
               right: score 1; wrong: score -1 and a correction, the turns the agent should have produced (the
               calculator call, its result, "The answer is X.") as JSON messages.
  3. export    ops/datasets.export_traces: good traces as they were, failures with the correction in place of
               the model's turns -> LLaMA-Factory sharegpt JSONL + dataset_info.json (with the trace ids).
  4. train     `athanor train` on a LoRA YAML shaped like recipes/smollm2-calculator/sft.yaml; the adapter is
               registered as a store model (FROM smollm2 + ADAPTER), which records its lineage.
  5. promote   ops/promote.promote: both models on held-out questions (calculator_data split "eval": numbers
               and phrasings never trained on), tool-call scorer (the first call is calculator with the exact
               expression), paired comparison; "prod" moves to the tuned model unless it is worse beyond noise.
  6. agent eval (not with --quick) end-to-end agent accuracy before/after on the same held-out questions.
Everything lives under --work (its own ATHANOR_HOME unless --home is given), so nothing touches the user's store.

Run: `python -m recipes.loop.run --work /tmp/loop` (about 40 train / 30 eval questions, 60 steps), or `--quick`
(a few of each and a few steps: the test's setting; it checks the loop runs and records, not that 6 steps teach).
Not for: the pieces themselves (athanor/ops/, recipes/calculator/).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import yaml


@dataclasses.dataclass
class LoopConfig:
    work: Path
    base: str = "smollm2"            # the model serving under `alias` before the loop
    alias: str = "prod"
    tuned: str = "loop-tuned"        # the store name the trained adapter is registered as
    num_train: int = 40              # questions sent through the agent (traffic)
    num_eval: int = 30               # held-out questions for the gate
    max_steps: int = 60              # LoRA steps
    max_tokens: int = 96             # per model call
    agent_eval: bool = True          # stage 6
    home: Path | None = None         # ATHANOR_HOME (default: work/home)


QUICK = {"num_train": 6, "num_eval": 6, "max_steps": 4, "max_tokens": 48, "agent_eval": False}


class Timer:
    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        print(f"[loop] {name} ...", file=sys.stderr, flush=True)
        yield
        self.stages[name] = round(time.perf_counter() - t0, 2)
        print(f"[loop] {name}: {self.stages[name]:.1f} s", file=sys.stderr, flush=True)


# --- stages ----------------------------------------------------------------------------------------------------


def serve_base(cfg: LoopConfig) -> None:
    from athanor.models.store import Store

    store = Store()
    if cfg.alias + ":latest" not in store.aliases():
        store.set_alias(cfg.alias, cfg.base)


def traffic(cfg: LoopConfig) -> list[dict]:
    """Each training question through the agent on the alias; -> [{trace_id, question, outcome}]."""
    from athanor import tracing
    from athanor.llm.local import LocalChatModel
    from recipes.calculator.calculator_data import generate
    from recipes.calculator.calculator_eval import make_agent, score_events

    model = LocalChatModel.load(cfg.alias)
    runs = []
    for q in generate(cfg.num_train, split="train"):
        with tracing.span("loop question", "chain") as root:
            events = list(make_agent("native", model, cfg.max_tokens).stream(q.text))
        runs.append({"trace_id": root.trace_id, "question": q, "outcome": score_events(q, events)})
    return runs


def feedback(store, runs: list[dict]) -> None:
    """Automatic verdicts; a wrong run gets the turns it should have produced as its correction."""
    from recipes.calculator.calculator_data import to_record

    for run in runs:
        o = run["outcome"]
        if o.correct:
            store.add_feedback(run["trace_id"], 1.0, comment="right answer", source="loop:calculator")
        else:
            fixed = to_record(run["question"])["messages"][2:]  # call, result, answer (after the question)
            store.add_feedback(run["trace_id"], -1.0, comment=f"wrong: {o.answer or o.stopped}"[:200],
                               correction=json.dumps(fixed), source="loop:calculator")


def export(cfg: LoopConfig, store, runs: list[dict]) -> tuple[Path, int]:
    from athanor.ops.datasets import export_traces, write_dataset
    from recipes.calculator.calculator_data import calculator_tool_spec

    records = export_traces(store, "sft", trace_ids=[r["trace_id"] for r in runs])
    tools = json.dumps([calculator_tool_spec()])
    for r in records:  # the llm spans name the offered tools but do not carry their definitions
        r.setdefault("tools", tools)
    path, _ = write_dataset(records, cfg.work / "data" / "loop_sft.jsonl", "sft")
    return path, len(records)


def train(cfg: LoopConfig, data: Path) -> Path:
    from athanor.models.store import Store
    from athanor.train.run import train as run_train

    keys = {"model_name_or_path": cfg.base, "stage": "sft", "finetuning_type": "lora", "lora_rank": 16,
            "lora_alpha": 32, "lora_dropout": 0.0, "lora_target": "all", "dataset": data.stem,
            "dataset_dir": str(data.parent), "cutoff_len": 1024, "output_dir": str(cfg.work / "saves" / "loop-lora"),
            "logging_steps": 1, "save_steps": 10_000, "per_device_train_batch_size": 1,
            "gradient_accumulation_steps": 1, "learning_rate": 1.0e-3, "max_steps": cfg.max_steps,
            "lr_scheduler_type": "cosine", "warmup_ratio": 0.05, "seed": 42}
    config = cfg.work / "loop_sft.yaml"
    config.write_text(yaml.safe_dump(keys, sort_keys=False))
    adapter = run_train(config, echo=lambda line: print(f"[train] {line}", file=sys.stderr))
    modelfile = cfg.work / "Modelfile.tuned"
    modelfile.write_text(f"FROM {cfg.base}\nADAPTER {Path(adapter).resolve()}\n")
    Store().create(cfg.tuned, modelfile)
    return Path(adapter)


def heldout_items(cfg: LoopConfig) -> tuple[Path, list]:
    """The gate's items: what the native agent sends first (its system prompt, the calculator), and the call."""
    from athanor.agent.native import DEFAULT_SYSTEM
    from recipes.calculator.calculator_data import calculator_tool_spec, generate

    questions = generate(cfg.num_eval, split="eval")
    path = cfg.work / "data" / "heldout.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = calculator_tool_spec()
    items = [{"input": [{"role": "system", "content": DEFAULT_SYSTEM}, {"role": "user", "content": q.text}],
              "tools": [spec], "ideal": {"name": "calculator", "arguments": {"expression": q.expression}}}
             for q in questions]
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    return path, questions


def gate(cfg: LoopConfig, data: Path) -> dict:
    from athanor.ops.promote import PromotionRefused, promote

    try:
        return promote(cfg.tuned, over=cfg.alias, data=data, scorer="tool-call", max_tokens=cfg.max_tokens)
    except PromotionRefused as e:
        print(f"[loop] {e}", file=sys.stderr)
        return e.record


def agent_accuracy(cfg: LoopConfig, model: str, questions: list) -> dict:
    from recipes.calculator.calculator_eval import evaluate, summarize

    return summarize(evaluate(model, questions, cfg.max_tokens))


# --- the loop ----------------------------------------------------------------------------------------------------


def run_loop(cfg: LoopConfig) -> dict:
    from athanor.models.store import Store
    from athanor.ops.tracing_setup import TraceSettings, start_tracing

    cfg.work.mkdir(parents=True, exist_ok=True)
    os.environ["ATHANOR_HOME"] = str(cfg.home or cfg.work / "home")
    timer, report = Timer(), {"config": {k: str(v) for k, v in dataclasses.asdict(cfg).items()}}
    tracing = start_tracing(TraceSettings())
    try:
        serve_base(cfg)
        with timer.stage("traffic"):
            runs = traffic(cfg)
            tracing.flush()
        with timer.stage("feedback"):
            feedback(tracing.store, runs)
        report["traffic"] = {"questions": len(runs), "right": sum(r["outcome"].correct for r in runs),
                             "trace_ids": [r["trace_id"] for r in runs]}
        with timer.stage("export"):
            data, n = export(cfg, tracing.store, runs)
        report["dataset"] = {"path": str(data), "records": n}
        with timer.stage("train"):
            report["adapter"] = str(train(cfg, data))
        items, questions = heldout_items(cfg)
        with timer.stage("eval+promote"):
            decision = gate(cfg, items)
        report["promotion"] = {k: decision[k] for k in ("status", "alias", "new", "old", "eval")}
        report["serving"] = Store().aliases().get(cfg.alias + ":latest")
        if cfg.agent_eval:
            with timer.stage("agent eval"):
                report["agent_accuracy"] = {"before": agent_accuracy(cfg, cfg.base, questions),
                                            "after": agent_accuracy(cfg, cfg.tuned, questions)}
    finally:
        tracing.stop()
    report["seconds"] = timer.stages
    (cfg.work / "loop_report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


def summary(report: dict) -> str:
    e = report["promotion"]["eval"]
    traffic = (f"traffic: {report['traffic']['right']}/{report['traffic']['questions']} right; "
               f"dataset: {report['dataset']['records']} records")
    gate = (f"held-out tool-call accuracy: {e['old_accuracy']:.1%} -> {e['new_accuracy']:.1%} on {e['n']} items "
            f"(p={e['p_value']:.3g}); {report['promotion']['status']}; {report['promotion']['alias']} -> "
            f"{report['serving']}")
    lines = [traffic, gate]
    if "agent_accuracy" in report:
        a = report["agent_accuracy"]
        lines.append(f"agent accuracy: {a['before']['correct']:.1%} -> {a['after']['correct']:.1%}")
    lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report["seconds"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="folder for the loop's data, adapter, store and traces")
    p.add_argument("--home", type=Path, help="ATHANOR_HOME to use (default: WORK/home)")
    p.add_argument("--quick", action="store_true", help="a few questions and steps (what the test runs)")
    p.add_argument("--base", default="smollm2")
    p.add_argument("--num-train", type=int)
    p.add_argument("--num-eval", type=int)
    p.add_argument("--max-steps", type=int)
    args = p.parse_args(argv)
    cfg = LoopConfig(work=args.work, base=args.base, home=args.home, **(QUICK if args.quick else {}))
    for key in ("num_train", "num_eval", "max_steps"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    report = run_loop(cfg)
    print(summary(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
