"""Preference pairs for the calculator DPO example: the right tool-using move vs the mistakes a small model makes.

For: `make_pairs(n, split)` and the CLI that writes the DPO example's data (recipes/smollm2-calculator/data/):
`calculator_prefs.jsonl` (training pairs) and `calculator_prefs_eval.jsonl` (held-out pairs: questions drawn
from calculator_data's eval split, so new numbers and partly new phrasings, none of them a training question).
Every record carries the native agent's system prompt and the real `calculator` tool spec, as the SFT data does,
and scores one assistant move. Four kinds of pair, each with an honest chosen reply:
  - call:   after the question, chosen = the calculator call with the right expression; rejected = a confident
            direct answer with a wrong number (what base SmolLM2 does: it never calls the tool and is ~3% right);
  - work:   as call, but the rejected answer shows its (wrong) working: "12 * 34 = 418. The answer is 418.";
  - expr:   chosen = the call with the right expression; rejected = a call whose expression misreads the
            question (an operand off by a digit or the wrong operator);
  - result: after the tool's result, chosen = "The answer is R." with the tool's R; rejected = a near miss.
Measured on 40-60 held-out pairs per kind, base SmolLM2-135M-Instruct prefers the rejected reply of every `call`
and `work` pair (a direct answer outscores the longer call in summed log-probability by ~45-55 nats) and the chosen
reply of every `expr` and `result` pair (it copies numbers from the question and from the tool well), so the mix
starts near 0.4 preference accuracy.

Not for: SFT data or the eval of a trained model (calculator_data.py, calculator_eval.py).
Run: `python -m recipes.calculator.calculator_prefs --out-dir recipes/smollm2-calculator/data`
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from athanor.agent.calculator import _format, calculate
from athanor.agent.native import DEFAULT_SYSTEM
from recipes.calculator.calculator_data import Question, calculator_tool_spec, generate

PREF_SEED, PREF_EVAL_SEED = 7, 4242
KIND_WEIGHTS = {"call": 0.35, "work": 0.25, "expr": 0.2, "result": 0.2}
TRAIN_FILE, EVAL_FILE = "calculator_prefs.jsonl", "calculator_prefs_eval.jsonl"


def near_miss(value: float, rng: random.Random) -> str:
    """A wrong number close enough to look right: off by 1, 2, 10 or 100 (0.1, 1 or 10 for non-integers)."""
    if isinstance(value, float) and not value.is_integer():
        return _format(round(value + rng.choice([-1, 1]) * rng.choice([0.1, 1, 10]), 6))
    return _format(int(value) + rng.choice([-1, 1]) * rng.choice([1, 2, 10, 100]))


def misread(expression: str, rng: random.Random) -> str:
    """The expression with one number's digit changed or one operator swapped, giving another value."""
    tokens = expression.split(" ")
    numbers = [i for i, t in enumerate(tokens) if t.strip("()").isdigit()]
    operators = [i for i, t in enumerate(tokens) if t in ("+", "-", "*", "/", "**")]
    if operators and rng.random() < 0.4:
        i = rng.choice(operators)
        tokens[i] = rng.choice([op for op in ("+", "-", "*", "/") if op != tokens[i]])
    else:
        i = rng.choice(numbers)
        digits = tokens[i].strip("()")
        j = rng.randrange(len(digits))
        new = str((int(digits[j]) + rng.randint(1, 9)) % 10)
        if j == 0 and new == "0" and len(digits) > 1:
            new = "1" if digits[0] != "1" else "2"
        tokens[i] = tokens[i].replace(digits, digits[:j] + new + digits[j + 1:], 1)
    wrong = " ".join(tokens)
    try:
        differs = calculate(wrong) != calculate(expression)
    except ValueError:  # e.g. a division by zero: not a plausible misreading
        differs = False
    return wrong if differs else misread(expression, rng)


def _call(expression: str) -> dict:
    return {"id": "call_0", "type": "function",
            "function": {"name": "calculator", "arguments": json.dumps({"expression": expression})}}


def pair_record(q: Question, kind: str, rng: random.Random) -> dict:
    """One preference record (OpenAI messages + chosen/rejected) of the given kind for question `q`."""
    prompt = [{"role": "system", "content": DEFAULT_SYSTEM}, {"role": "user", "content": q.text}]
    call_turn = {"role": "assistant", "content": "", "tool_calls": [_call(q.expression)]}
    if kind == "call":
        chosen, rejected = call_turn, {"role": "assistant", "content": f"The answer is {near_miss(q.value, rng)}."}
    elif kind == "work":
        wrong = near_miss(q.value, rng)
        chosen = call_turn
        rejected = {"role": "assistant", "content": f"{q.expression} = {wrong}. The answer is {wrong}."}
    elif kind == "expr":
        chosen = call_turn
        rejected = {"role": "assistant", "content": "", "tool_calls": [_call(misread(q.expression, rng))]}
    else:
        assert kind == "result", kind
        prompt += [call_turn, {"role": "tool", "tool_call_id": "call_0", "content": q.answer}]
        chosen = {"role": "assistant", "content": f"The answer is {q.answer}."}
        rejected = {"role": "assistant", "content": f"The answer is {near_miss(q.value, rng)}."}
    return {"messages": prompt, "chosen": chosen, "rejected": rejected, "tools": [calculator_tool_spec()],
            "kind": kind}


def make_pairs(n: int, split: str = "train", seed: int | None = None,
               kind_weights: dict[str, float] | None = None) -> list[dict]:
    """`n` records over distinct questions; `split="eval"` draws calculator_data's held-out questions and drops
    any whose text a training set of the same size would also contain."""
    weights = kind_weights or KIND_WEIGHTS
    seed = seed if seed is not None else (PREF_SEED if split == "train" else PREF_EVAL_SEED)
    rng = random.Random(seed)
    if split == "eval":
        banned = {q.text for q in generate(4 * n, PREF_SEED)}
        questions = [q for q in generate(3 * n, split="eval") if q.text not in banned][:n]
    else:
        questions = generate(n, seed)
    kinds = rng.choices(list(weights), list(weights.values()), k=len(questions))
    return [pair_record(q, kind, rng) for q, kind in zip(questions, kinds)]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the calculator DPO pairs (training and held-out files).")
    parser.add_argument("--out-dir", required=True, help=f"folder for {TRAIN_FILE} and {EVAL_FILE}")
    parser.add_argument("-n", type=int, default=200, help="training pairs (default 200)")
    parser.add_argument("--num-eval", type=int, default=60, help="held-out pairs (default 60)")
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    print(f"wrote {write_jsonl(out / TRAIN_FILE, make_pairs(args.n, 'train'))}")
    print(f"wrote {write_jsonl(out / EVAL_FILE, make_pairs(args.num_eval, 'eval'))}")


if __name__ == "__main__":
    main()
