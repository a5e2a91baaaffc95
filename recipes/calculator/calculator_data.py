"""Synthetic tool-use conversations for the calculator showcase: arithmetic questions answered through a tool call.

For: `generate(n, seed, split)` -> questions with their reference expression and value, and two record shapes:
- `to_record` -> one OpenAI-messages SFT record in exactly the shape the native agent (agent/native.py) sends to a
  local model: its DEFAULT_SYSTEM prompt, the real `calculator` tool spec, the user question, an assistant turn
  holding one `calculator` call with {"expression": ...}, the tool's own output as the `tool` turn, and a final
  "The answer is N." Rendering (tool listing in the system prompt, Hermes `<tool_call>` blocks) is left to
  chat_format.py at training time, so training and inference share one format.
- `to_react_record` -> the same exchange in the ReAct agent's text format (agent/react.py). The messages are not
  written here: the real `ReActAgent` with the real calculator is run on a replay model that answers with the
  target replies ("Thought: Do I need to use a tool? Yes / Action: calculator / Action Input: {...}", then
  "Thought: Do I need to use a tool? No / AI: The answer is N."), and the record is the agent's own last request
  (its system prompt with the tool list, the question, its Observation turn) plus the final reply. So the prompt
  text can never drift from the agent's.
`write_dataset` mixes both shapes (`react_share`, default one half).
`split="eval"` draws from extra phrasings never used for training and skips any question text that the
training split of the same size range could produce with the training seed (new numbers and new wordings).

Not for: evaluating a model (calculator_eval.py) or arithmetic itself (agent/calculator.py evaluates).
The DPO example's pairs come from calculator_prefs.py.
Run: `python -m recipes.calculator.calculator_data --out recipes/smollm2-calculator/data/calculator_train.jsonl`
(`--react-share 0` for native only).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from athanor.agent.calculator import _format, calculate
from athanor.agent.native import DEFAULT_SYSTEM
from athanor.llm.base import ChatDelta

TRAIN_SEED, EVAL_SEED = 1234, 98765
OP_WORDS = {"+": ("plus", "added to"), "-": ("minus",), "*": ("times", "multiplied by"), "/": ("divided by",)}


@dataclass(frozen=True)
class Question:
    text: str
    expression: str  # what the model should pass to the calculator
    kind: str

    @property
    def value(self) -> float:
        return calculate(self.expression)

    @property
    def answer(self) -> str:
        """The tool's output for the reference expression, as the agent would show it to the model."""
        return _format(self.value)


# Phrasings: (train templates, held-out eval-only templates). {a} {b} {c} {op} {word} are filled in.
BINARY = (["What is {a} {op} {b}?", "Calculate {a} {op} {b}.", "Compute {a} {word} {b}.", "What's {a} {word} {b}?",
           "{a} {op} {b}", "Use the calculator: {a} {op} {b}"],
          ["How much is {a} {op} {b}?", "Can you work out {a} {word} {b} for me?", "{a} {op} {b} = ?",
           "Please find {a} {word} {b}.", "I need the result of {a} {op} {b}."])
TRIPLE = (["What is {a} {op} {b} {op2} {c}?", "Calculate ({a} {op} {b}) {op2} {c}."],
          ["Work out ({a} {op} {b}) {op2} {c}, please.", "What do you get for {a} {op} {b} {op2} {c}?"])
PERCENT = (["What is {p}% of {n}?", "Calculate {p} percent of {n}."],
           ["How much is {p}% of {n}?", "Find {p} percent of {n}."])
POWER = (["What is {a} squared?", "What is {a} to the power of {b}?"],
         ["Compute {a} raised to the power {b}.", "How much is {a} squared?"])
WORD = (["A box holds {a} apples. How many apples are in {b} boxes?",
         "I had {a} dollars and spent {b}. How much is left?",
         "{a} cookies are shared equally among {b} children. How many does each child get?",
         "A train travels {a} km per hour for {b} hours. How far does it go?"],
        ["Each ticket costs {a} dollars. What do {b} tickets cost?",
         "A tank has {a} liters and {b} liters leak out. How many liters remain?",
         "{a} pages are split evenly over {b} days. How many pages per day?"])
WORD_OPS = (["*", "-", "/", "*"], ["*", "-", "/"])  # the operation of each WORD template, same order
SMALL_TALK = [("Hi!", "Hello! How can I help you today?"), ("Thanks!", "You're welcome!"),
              ("Who are you?", "I am a helpful assistant. I can do arithmetic with my calculator tool."),
              ("Hello there", "Hello! Ask me any arithmetic question.")]


def _num(rng: random.Random, digits: int) -> int:
    return rng.randint(10 ** (digits - 1) if digits > 1 else 1, 10**digits - 1)


def _binary(rng: random.Random, templates: list[str]) -> Question:
    op = rng.choice("+-*/")
    if op == "*":
        a, b = _num(rng, rng.randint(1, 4)), _num(rng, rng.randint(1, 3))
    elif op == "/":
        b = _num(rng, rng.randint(1, 2))
        a = b * _num(rng, rng.randint(1, 3)) if rng.random() < 0.7 else _num(rng, rng.randint(2, 4))
    else:
        a, b = _num(rng, rng.randint(1, 5)), _num(rng, rng.randint(1, 5))
    text = rng.choice(templates).format(a=a, b=b, op=rng.choice([op, {"*": "x", "/": "/"}.get(op, op)]),
                                        word=rng.choice(OP_WORDS[op]))
    return Question(text, f"{a} {op} {b}", "binary")


def _triple(rng: random.Random, templates: list[str]) -> Question:
    a, b, c = _num(rng, rng.randint(1, 3)), _num(rng, rng.randint(1, 3)), _num(rng, rng.randint(1, 2))
    op, op2 = rng.choice("+-*"), rng.choice("+-*")
    template = rng.choice(templates)
    expr = f"({a} {op} {b}) {op2} {c}" if "(" in template else f"{a} {op} {b} {op2} {c}"
    return Question(template.format(a=a, b=b, c=c, op=op, op2=op2), expr, "triple")


def _percent(rng: random.Random, templates: list[str]) -> Question:
    p, n = rng.choice([5, 10, 12, 15, 20, 25, 30, 40, 50, 75, rng.randint(1, 99)]), _num(rng, rng.randint(2, 4))
    return Question(rng.choice(templates).format(p=p, n=n), f"{n} * {p} / 100", "percent")


def _power(rng: random.Random, templates: list[str]) -> Question:
    template = rng.choice(templates)
    a = _num(rng, rng.randint(1, 2))
    b = 2 if "squared" in template else rng.randint(2, 5 if a < 10 else 3)
    return Question(template.format(a=a, b=b), f"{a} ** {b}", "power")


def _word(rng: random.Random, templates: list[str], ops: list[str]) -> Question:
    i = rng.randrange(len(templates))
    op = ops[i]
    if op == "/":
        b = rng.randint(2, 12)
        a = b * rng.randint(2, 60)
    elif op == "-":
        a = _num(rng, rng.randint(2, 4))
        b = rng.randint(1, a)
    else:
        a, b = _num(rng, rng.randint(1, 3)), rng.randint(2, 40)
    return Question(templates[i].format(a=a, b=b), f"{a} {op} {b}", "word")


KINDS: list[tuple[float, Callable[[random.Random, int], Question]]] = [
    (0.45, lambda rng, s: _binary(rng, BINARY[s])),
    (0.15, lambda rng, s: _triple(rng, TRIPLE[s])),
    (0.12, lambda rng, s: _percent(rng, PERCENT[s])),
    (0.08, lambda rng, s: _power(rng, POWER[s])),
    (0.20, lambda rng, s: _word(rng, WORD[s], WORD_OPS[s])),
]


def generate(n: int, seed: int | None = None, split: str = "train") -> list[Question]:
    """`n` distinct questions. train: training phrasings; eval: half held-out phrasings, no training overlap."""
    assert split in ("train", "eval"), split
    rng = random.Random(TRAIN_SEED if seed is None and split == "train" else EVAL_SEED if seed is None else seed)
    banned = {q.text for q in generate(max(4 * n, 2000), split="train")} if split == "eval" else set()
    out: list[Question] = []
    seen: set[str] = set()
    weights = [w for w, _ in KINDS]
    while len(out) < n:
        make = rng.choices([k for _, k in KINDS], weights)[0]
        phrasing = 1 if split == "eval" and rng.random() < 0.5 else 0
        q = make(rng, phrasing)
        if q.text in seen or q.text in banned:
            continue
        seen.add(q.text)
        out.append(q)
    return out


def calculator_tool_spec() -> dict:
    from athanor.agent.calculator import calculator
    from athanor.agent.tools import openai_tool_spec

    return openai_tool_spec(calculator)


def to_record(q: Question) -> dict:
    """One OpenAI-messages record: the agent's system prompt, the call, the tool's output, the answer."""
    call = {"id": "call_0", "type": "function",
            "function": {"name": "calculator", "arguments": json.dumps({"expression": q.expression})}}
    messages = [{"role": "system", "content": DEFAULT_SYSTEM}, {"role": "user", "content": q.text},
                {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_0", "content": q.answer},
                {"role": "assistant", "content": f"The answer is {q.answer}."}]
    return {"messages": messages, "tools": [calculator_tool_spec()]}


REACT_CALL = 'Thought: Do I need to use a tool? Yes\nAction: calculator\nAction Input: {arguments}'
REACT_ANSWER = "Thought: Do I need to use a tool? No\nAI: {answer}"


class _Replay:
    """A ChatModel that answers with fixed replies and keeps the last request: drives the real ReActAgent."""

    def __init__(self, replies: list[str]) -> None:
        self.replies, self.last_messages = list(replies), []

    def stream(self, messages: list[dict], *, tools: list[dict] | None = None, **options):
        assert not tools, "the ReAct agent sends tools in the prompt text, never in the `tools` field"
        self.last_messages = [dict(m) for m in messages]
        yield ChatDelta(text=self.replies.pop(0), finish_reason="stop")


def react_conversation(question: str, replies: list[str]) -> tuple[list[dict], list]:
    """(messages the ReAct agent sends for its last step + that step's reply, the agent's events): the agent
    with the real calculator, run on `replies`."""
    from athanor.agent.calculator import calculator
    from athanor.agent.react import ReActAgent

    model = _Replay(replies)
    events = list(ReActAgent(model, [calculator], max_iterations=len(replies)).stream(question))
    assert not model.replies, "the agent stopped before using every reply"
    return [*model.last_messages, {"role": "assistant", "content": replies[-1].strip()}], events


def to_react_record(q: Question) -> dict:
    """One record in the ReAct agent's format: call the calculator, read the Observation, answer."""
    call = REACT_CALL.format(arguments=json.dumps({"expression": q.expression}))
    answer = f"The answer is {q.answer}."
    messages, events = react_conversation(q.text, [call, REACT_ANSWER.format(answer=answer)])
    # The agent must have run the call and ended with our answer; anything else means the format drifted.
    steps = [e for e in events if e.kind != "thought"]
    assert [e.kind for e in steps] == ["tool_call", "tool_result", "answer"], events
    assert steps[1].text == q.answer and steps[2].text == answer, events
    return {"messages": messages}


def react_small_talk_record(rng: random.Random) -> dict:
    question, reply = rng.choice(SMALL_TALK)
    messages, events = react_conversation(question, [REACT_ANSWER.format(answer=reply)])
    assert events[-1].kind == "answer" and events[-1].text == reply, events
    return {"messages": messages}


def small_talk_record(rng: random.Random) -> dict:
    question, reply = rng.choice(SMALL_TALK)
    return {"messages": [{"role": "system", "content": DEFAULT_SYSTEM}, {"role": "user", "content": question},
                         {"role": "assistant", "content": reply}], "tools": [calculator_tool_spec()]}


def write_dataset(path: str | Path, n: int, seed: int | None = None, small_talk: float = 0.05,
                  react_share: float = 0.5) -> Path:
    """Write `n` arithmetic records (+ a `small_talk` share of no-tool chats, so the model does not call the
    calculator for everything) as JSON lines; each record is in the ReAct format with chance `react_share`,
    else native. Every question appears once, in one format."""
    if not 0.0 <= react_share <= 1.0:
        raise ValueError(f"react_share must be in [0, 1], got {react_share}")
    rng = random.Random(seed if seed is not None else TRAIN_SEED)
    records = [to_react_record(q) if rng.random() < react_share else to_record(q) for q in generate(n, seed)]
    for _ in range(round(small_talk * n)):
        chat = react_small_talk_record(rng) if rng.random() < react_share else small_talk_record(rng)
        records.insert(rng.randrange(len(records) + 1), chat)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the calculator tool-use SFT dataset (OpenAI messages).")
    parser.add_argument("--out", required=True, help="output .jsonl path")
    parser.add_argument("-n", type=int, default=1000, help="arithmetic samples (default 1000)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--react-share", type=float, default=0.5,
                        help="share of records in the ReAct agent's text format (default 0.5; the rest native)")
    args = parser.parse_args(argv)
    print(f"wrote {write_dataset(args.out, args.n, args.seed, react_share=args.react_share)}")


if __name__ == "__main__":
    main()
