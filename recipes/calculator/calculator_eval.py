"""Evaluate a model as a calculator-using agent on held-out arithmetic questions: tool-call validity and accuracy.

For: the calculator showcase's before/after numbers. Each question runs through a real agent with the real
`calculator` tool over our engine in-process (llm/local.py), greedy: `--agent native` (default) is
agent/native.py's `ToolCallingAgent`, as `athanor agent MODEL --native --tools calculator` runs it; `--agent react`
is agent/react.py's `ReActAgent` (Thought / Action / Action Input / Observation ... AI:), as
`athanor agent MODEL --tools calculator` runs it. Both get at most 3 steps. Per question:
  - called: the first reply made a tool call (native: a call our parser recognised; react: an `Action:` naming
    any tool, even one with bad input);
  - valid_call: that first call is `calculator` with {"expression": ...} the calculator accepts;
  - correct_call: its expression evaluates to the reference value;
  - correct: the agent ended with an answer (a run stopped by max_iterations or the wall-time limit never counts)
    whose last number equals the reference value (to 1e-6 relative, or to the answer's own rounding when it
    gives at least 2 decimals).
Questions come from calculator_data.generate(split="eval"): new numbers and, for half of them, phrasings never
used in training.

Not for: training (the recipe does that) or general benchmarks.
Run: `python -m recipes.calculator.calculator_eval --model smollm2 --model smollm2-calculator -n 200 [--agent react]
[--out f.json]`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import asdict, dataclass

from recipes.calculator.calculator_data import Question, generate

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@dataclass
class Outcome:
    question: str
    expected: str
    called: bool = False
    valid_call: bool = False
    correct_call: bool = False
    correct: bool = False
    answer: str | None = None
    call: str | None = None
    stopped: str | None = None  # "stopped after N steps" / wall-time: the run ended without an answer


def last_number(text: str) -> str | None:
    found = _NUMBER.findall(text or "")
    return found[-1].replace(",", "") if found else None


def matches(answer_text: str | None, expected: float) -> bool:
    """The last number of the answer equals `expected` (1e-6 relative; or its own rounding if >= 2 decimals)."""
    token = last_number(answer_text or "")
    if token is None:
        return False
    try:
        got = float(token)
    except ValueError:
        return False
    if abs(got - expected) <= 1e-6 * max(1.0, abs(expected)):
        return True
    decimals = len(token.split(".")[1]) if "." in token else 0
    return decimals >= 2 and round(expected, decimals) == got


def score_events(q: Question, events: list) -> Outcome:
    """One question's outcome from the agent's event list (agent.react.AgentEvent)."""
    from athanor.agent.calculator import calculate
    from athanor.agent.tools import ToolError

    out = Outcome(q.text, q.answer)
    expected = q.value
    first_step = min((e.step for e in events), default=1)
    first = [e for e in events if e.step == first_step]
    # An error naming a tool is a call the agent refused (ReAct: unknown tool, unparsable Action Input).
    attempts = [e for e in first if e.kind == "tool_call" or (e.kind == "error" and e.tool is not None)]
    if attempts:
        out.called, out.call = True, f"{attempts[0].tool} {attempts[0].text}"
    calls = [e for e in first if e.kind == "tool_call"]
    if calls:
        args = calls[0].arguments
        if calls[0].tool == "calculator" and isinstance(args, dict) and isinstance(args.get("expression"), str):
            try:
                value = calculate(args["expression"])
                out.valid_call = True
                out.correct_call = abs(value - expected) <= 1e-6 * max(1.0, abs(expected))
            except ToolError:
                pass
    if events and events[-1].kind == "stopped":
        out.stopped = events[-1].text
    answers = [e for e in events if e.kind == "answer"]
    out.answer = answers[-1].text if answers else None
    out.correct = answers != [] and matches(out.answer, expected)
    return out


AGENTS = ("native", "react")


def make_agent(kind: str, model, max_tokens: int = 96):
    """A fresh agent (no memory) of `kind` with the real calculator: greedy, 3 steps, 120 s."""
    from athanor.agent.calculator import calculator
    from athanor.agent.native import ToolCallingAgent
    from athanor.agent.react import ReActAgent

    if kind == "native":
        return ToolCallingAgent(model, [calculator], max_iterations=3, max_seconds=120.0,
                                options={"temperature": 0.0, "max_tokens": max_tokens})
    if kind == "react":  # keeps the agent's own stop sequences
        return ReActAgent(model, [calculator], max_iterations=3, max_seconds=120.0,
                          options={"temperature": 0.0, "max_tokens": max_tokens})
    raise ValueError(f"unknown agent {kind!r}; choose one of {', '.join(AGENTS)}")


def run_questions(model, questions: list[Question], agent: str = "native", max_tokens: int = 96,
                  progress=None) -> list[Outcome]:
    """Every question through a fresh `agent` on a loaded ChatModel `model`; `progress(k, outcome)` after each."""
    outcomes = []
    for i, q in enumerate(questions):
        outcomes.append(score_events(q, list(make_agent(agent, model, max_tokens).stream(q.text))))
        if progress is not None:
            progress(i + 1, outcomes[-1])
    return outcomes


def evaluate(model_name: str, questions: list[Question], max_tokens: int = 96, progress=None,
             agent: str = "native") -> list[Outcome]:
    """Run every question through `agent` with the calculator tool on `model_name` (greedy, in-process)."""
    from athanor.llm.local import LocalChatModel

    if agent not in AGENTS:
        raise ValueError(f"unknown agent {agent!r}; choose one of {', '.join(AGENTS)}")
    return run_questions(LocalChatModel.load(model_name), questions, agent, max_tokens, progress)


def summarize(outcomes: list[Outcome]) -> dict[str, float]:
    n = len(outcomes) or 1
    return {"n": len(outcomes), **{k: round(sum(getattr(o, k) for o in outcomes) / n, 4)
                                   for k in ("called", "valid_call", "correct_call", "correct")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Calculator-agent accuracy on held-out arithmetic questions.")
    parser.add_argument("--model", action="append", required=True, help="store name or path (repeatable)")
    parser.add_argument("-n", type=int, default=200, help="held-out questions (default 200)")
    parser.add_argument("--agent", choices=AGENTS, default="native",
                        help="native: the tool-calling agent (default); react: the ReAct text agent")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--out", help="write per-question outcomes and summaries as JSON here (and each outcome "
                        "as it comes to OUT.partial.jsonl)")
    args = parser.parse_args(argv)
    questions = generate(args.n, split="eval")
    report = {}
    partial = open(args.out + ".partial.jsonl", "a", encoding="utf-8") if args.out else None  # noqa: SIM115
    for name in args.model:
        start = time.perf_counter()

        def progress(k: int, o: Outcome, name: str = name, start: float = start) -> None:
            if partial is not None:
                partial.write(json.dumps({"model": name, "agent": args.agent, **asdict(o)}) + "\n")
                partial.flush()
            if k % 20 == 0 or k == len(questions):
                print(f"  {name}: {k}/{len(questions)} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)

        outcomes = evaluate(name, questions, args.max_tokens, progress, args.agent)
        summary = {"agent": args.agent} | summarize(outcomes) | {"seconds": round(time.perf_counter() - start, 1)}
        report[name] = {"summary": summary, "outcomes": [asdict(o) for o in outcomes]}
        print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in summary.items()), flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
