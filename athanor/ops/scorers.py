"""Scorers for `athanor eval`: one reply + the item's `ideal` -> a verdict (correct?, one-line detail).

Items are OpenAI-evals style (`{"input": [messages] | "prompt": text, "ideal": answer | [answers]}`); a list of
ideals means any of them counts, as in openai/evals. The names:

    exact        the reply, stripped, equals an ideal (case-sensitive unless ignore_case)
    match        the reply starts with an ideal (openai/evals' `Match`)
    contains     an ideal occurs in the reply (openai/evals' `Includes`)
    fuzzy        normalized reply and ideal contain one another (openai/evals' `FuzzyMatch`: lower case, no
                 punctuation, no articles, single spaces)
    regex        an ideal, read as a Python regular expression, is found in the reply
    json-schema  the reply parses as JSON (a ```json fence is allowed) and validates against the ideal schema
    tool-call    the reply's first tool call has the ideal {"name", "arguments"} (arguments compared as JSON)
    judge:MODEL  another model grades the reply against the ideal with a fixed rubric (GRADER_PROMPT)

Not for: running the model (evals.py) or storing runs (eval_store.py).
"""

from __future__ import annotations

import dataclasses
import json
import re
import string
from collections.abc import Callable
from typing import Any

NAMES = ("exact", "match", "contains", "fuzzy", "regex", "json-schema", "tool-call", "judge:MODEL")


@dataclasses.dataclass
class Verdict:
    correct: bool
    detail: str  # one line a person reads: why it passed or failed


@dataclasses.dataclass
class Reply:
    """What the model answered: its text and its tool calls ({"name", "arguments": JSON text})."""

    text: str
    tool_calls: list[dict] = dataclasses.field(default_factory=list)


def ideals(ideal: Any) -> list:
    """`ideal` as a list of acceptable answers (a single answer -> [answer])."""
    return list(ideal) if isinstance(ideal, (list, tuple)) else [ideal]


def _short(text: str, n: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


# --- string scorers -----------------------------------------------------------------------------------------


def exact(reply: Reply, ideal: Any, ignore_case: bool = False) -> Verdict:
    out = reply.text.strip()
    fold = str.casefold if ignore_case else (lambda s: s)
    for want in ideals(ideal):
        if fold(out) == fold(str(want).strip()):
            return Verdict(True, f"equals {_short(want)!r}")
    return Verdict(False, f"{_short(out)!r} is not {_short(' | '.join(map(str, ideals(ideal))))!r}")


def match(reply: Reply, ideal: Any, ignore_case: bool = False) -> Verdict:
    out = reply.text.strip()
    fold = str.casefold if ignore_case else (lambda s: s)
    for want in ideals(ideal):
        if fold(out).startswith(fold(str(want))):
            return Verdict(True, f"starts with {_short(want)!r}")
    return Verdict(False, f"{_short(out)!r} starts with no ideal answer")


def contains(reply: Reply, ideal: Any, ignore_case: bool = False) -> Verdict:
    fold = str.casefold if ignore_case else (lambda s: s)
    for want in ideals(ideal):
        if fold(str(want)) in fold(reply.text):
            return Verdict(True, f"contains {_short(want)!r}")
    return Verdict(False, f"{_short(reply.text)!r} contains no ideal answer")


def normalize(text: str) -> str:
    """Lower case, punctuation and the articles a/an/the removed, whitespace collapsed (openai/evals' rule)."""
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def fuzzy(reply: Reply, ideal: Any, ignore_case: bool = True) -> Verdict:
    out = normalize(reply.text)
    for want in ideals(ideal):
        w = normalize(str(want))
        if (out == w) if not out or not w else (w in out or out in w):
            return Verdict(True, f"fuzzy-matches {_short(want)!r}")
    return Verdict(False, f"{_short(reply.text)!r} does not fuzzy-match an ideal answer")


def regex(reply: Reply, ideal: Any, ignore_case: bool = False) -> Verdict:
    flags = re.IGNORECASE if ignore_case else 0
    for pattern in ideals(ideal):
        try:
            m = re.search(str(pattern), reply.text, flags)
        except re.error as e:
            raise ValueError(f"ideal {pattern!r} is not a valid regular expression: {e}") from None
        if m:
            return Verdict(True, f"/{_short(pattern)}/ found {_short(m.group(0))!r}")
    return Verdict(False, f"no ideal pattern found in {_short(reply.text)!r}")


# --- structured scorers -------------------------------------------------------------------------------------

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def parse_json_reply(text: str) -> Any:
    """The reply as JSON (inside a ```json fence or bare); ValueError when it is not JSON."""
    text = text.strip()
    m = _FENCE.match(text)
    return json.loads(m.group(1) if m else text)


def json_schema(reply: Reply, ideal: Any, ignore_case: bool = False) -> Verdict:
    import jsonschema  # a dependency of the serve extra (constrained decoding); clear error if absent

    schema = ideal[0] if isinstance(ideal, list) and len(ideal) == 1 else ideal
    if not isinstance(schema, dict):
        raise ValueError("the json-schema scorer needs `ideal` to be a JSON schema object")
    try:
        value = parse_json_reply(reply.text)
    except ValueError as e:
        return Verdict(False, f"not JSON: {_short(str(e))}")
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as e:
        return Verdict(False, f"schema: {_short(e.message, 100)}")
    except jsonschema.SchemaError as e:
        raise ValueError(f"ideal is not a valid JSON schema: {_short(e.message, 100)}") from None
    return Verdict(True, "valid JSON for the schema")


def _arguments(value: Any) -> Any:
    """Tool arguments as data: JSON text is parsed, a dict stays a dict; unparseable text stays text."""
    if isinstance(value, str):
        try:
            return json.loads(value) if value.strip() else {}
        except ValueError:
            return value
    return {} if value is None else value


def tool_call(reply: Reply, ideal: Any, ignore_case: bool = False) -> Verdict:
    wants = [w for w in ideals(ideal)]
    if not all(isinstance(w, dict) and "name" in w for w in wants):
        raise ValueError('the tool-call scorer needs `ideal` to be {"name": ..., "arguments": {...}} (or a list)')
    if not reply.tool_calls:
        return Verdict(False, f"no tool call; replied {_short(reply.text)!r}")
    got = reply.tool_calls[0]
    name, args = got.get("name"), _arguments(got.get("arguments"))
    for want in wants:
        if name == want["name"] and args == _arguments(want.get("arguments")):
            return Verdict(True, f"called {name}({_short(json.dumps(args), 80)})")
    return Verdict(False, f"called {name}({_short(json.dumps(args) if not isinstance(args, str) else args, 80)})")


# --- model-graded ---------------------------------------------------------------------------------------------

GRADER_PROMPT = """You are grading an answer to a question against a reference answer.

[Question]
{question}

[Reference answer]
{ideal}

[Submitted answer]
{output}

Does the submitted answer give the same answer as the reference? Ignore style, length and extra explanation;
judge only whether the answer is correct. Reply with one word on the last line: CORRECT or INCORRECT."""
_VERDICT = re.compile(r"\b(INCORRECT|CORRECT)\b", re.IGNORECASE)


def parse_grade(text: str) -> bool | None:
    """The grader's last CORRECT / INCORRECT word (any case); None when it gave neither."""
    found = _VERDICT.findall(text)
    return None if not found else found[-1].upper() == "CORRECT"


def judge_messages(question: str, ideal: Any, output: str) -> list[dict]:
    want = " | ".join(str(i) for i in ideals(ideal))
    return [{"role": "user", "content": GRADER_PROMPT.format(question=question, ideal=want, output=output)}]


def make_judge(model, **options) -> Callable[..., Verdict]:
    """A scorer that asks `model` (a ChatModel) for a grade; `question` is the item's last user message."""
    options = {"temperature": 0, "max_tokens": 16} | options

    def judge(reply: Reply, ideal: Any, ignore_case: bool = False, question: str = "") -> Verdict:
        grade = model.chat(judge_messages(question, ideal, reply.text), **options).text
        verdict = parse_grade(grade)
        if verdict is None:
            return Verdict(False, f"the judge gave no verdict: {_short(grade)!r}")
        return Verdict(verdict, f"judge {model.name}: {'CORRECT' if verdict else 'INCORRECT'}")

    judge.needs_question = True  # type: ignore[attr-defined]
    return judge


SCORERS: dict[str, Callable[..., Verdict]] = {
    "exact": exact, "match": match, "contains": contains, "fuzzy": fuzzy, "regex": regex,
    "json-schema": json_schema, "tool-call": tool_call,
}


def get_scorer(spec: str, load_model: Callable[[str], Any] | None = None) -> Callable[..., Verdict]:
    """A scorer by name; `judge:MODEL` loads MODEL with `load_model` (default: llm.load_chat_model)."""
    if spec.startswith("judge:"):
        name = spec[len("judge:"):].strip()
        if not name:
            raise ValueError("judge scorer needs a model: --scorer judge:MODEL")
        if load_model is None:
            from athanor.llm import load_chat_model as load_model
        return make_judge(load_model(name))
    if spec not in SCORERS:
        raise ValueError(f"unknown scorer {spec!r}; choose one of {', '.join(NAMES)}")
    return SCORERS[spec]
