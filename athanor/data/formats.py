"""Dataset records -> one canonical shape: OpenAI-style messages (and preference pairs), each record checked.

For: reading json / jsonl / csv / parquet files into plain dict records, and turning one record of the alpaca,
sharegpt or OpenAI-messages format (or a chosen/rejected preference record of any of them) into a `Conversation`
or `PreferencePair`. Every problem is a `RecordError` with a one-line reason, so validation can count bad records
and show the first one before training starts.

Not for: tokenizing or chat templates (train/tokenize.py renders with the model's own template), the registry of
named datasets (registry.py), or cleaning/dedup.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Format = Literal["alpaca", "sharegpt", "openai"]
FORMATS: tuple[str, ...] = ("alpaca", "sharegpt", "openai")
ROLES = ("system", "user", "assistant", "tool")


class RecordError(ValueError):
    """One record that cannot be used; the message says why in one line."""


@dataclass
class Conversation:
    """OpenAI-style messages: {"role", "content", optional "tool_calls"}; `tools` are JSON-schema function specs."""

    messages: list[dict]
    tools: list[dict] | None = None


@dataclass
class PreferencePair:
    """A prompt (messages ending with a user/tool turn) and two candidate assistant replies."""

    prompt: list[dict]
    chosen: dict
    rejected: dict
    tools: list[dict] | None = None


# Column names per format, overridable per dataset in the registry (LLaMA-Factory's `columns`).
DEFAULT_COLUMNS: dict[str, dict[str, str]] = {
    "alpaca": {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
               "history": "history", "chosen": "chosen", "rejected": "rejected"},
    "sharegpt": {"messages": "conversations", "system": "system", "tools": "tools", "chosen": "chosen",
                 "rejected": "rejected"},
    "openai": {"messages": "messages", "tools": "tools", "chosen": "chosen", "rejected": "rejected"},
}
# ShareGPT's `from` values -> roles (LLaMA-Factory's `tags`).
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "function_call": "function_call", "observation": "tool", "tool": "tool"}


# ------------------------------------------------------------------------------------------------ files


def read_records(path: str | Path) -> list[dict]:
    """All records of a json (a list of objects), jsonl, csv or parquet file, as dicts."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            return [_decode_csv_row(row) for row in csv.DictReader(f)]
    if suffix == ".parquet":
        return _read_parquet(path)
    raise RecordError(f"{path}: unsupported file type {suffix!r} (use .json, .jsonl, .csv or .parquet)")


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise RecordError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    return records


def _read_json(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); is it JSON Lines (.jsonl)?") from None
    if not isinstance(data, list):
        raise RecordError(f"{path}: a .json dataset must be a list of records, got {type(data).__name__}")
    return data


def _decode_csv_row(row: dict[str, str]) -> dict[str, Any]:
    # CSV cells are strings; list/object columns (history, conversations, messages, tools) are stored as JSON text.
    out: dict[str, Any] = {}
    for key, value in row.items():
        text = (value or "").strip()
        if text[:1] in "[{":
            try:
                out[key] = json.loads(text)
                continue
            except json.JSONDecodeError:
                pass
        out[key] = value
    return out


def _read_parquet(path: Path) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise RecordError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
    return pq.read_table(path).to_pylist()


def sniff_format(record: Any) -> tuple[str, bool]:
    """(format, is_preference) guessed from one record's keys, for files used without a registry entry."""
    if not isinstance(record, dict):
        raise RecordError(f"a record must be a JSON object, got {type(record).__name__}")
    ranking = "chosen" in record and "rejected" in record
    if "messages" in record:
        return "openai", ranking
    if "conversations" in record:
        return "sharegpt", ranking
    if "instruction" in record:
        return "alpaca", ranking
    raise RecordError(f"cannot tell the format from keys {sorted(record)}: expected instruction (alpaca), "
                      "conversations (sharegpt) or messages (openai)")


# ------------------------------------------------------------------------------------------ record parsing


def parse_record(record: Any, fmt: str, columns: dict[str, str] | None = None,
                 ranking: bool = False, tags: dict[str, str] | None = None) -> Conversation | PreferencePair:
    """One raw record -> a checked Conversation (or PreferencePair when `ranking`); RecordError if unusable.
    `tags` (sharegpt): LLaMA-Factory's role_tag/content_tag and the role names, e.g. OpenAI-style role/content."""
    if not isinstance(record, dict):
        raise RecordError(f"a record must be a JSON object, got {type(record).__name__}")
    cols = {**DEFAULT_COLUMNS[fmt], **(columns or {})}
    if tags and fmt == "sharegpt":
        record = retag_sharegpt(record, cols, tags)
    if ranking:
        return _parse_pair(record, fmt, cols)
    if fmt == "alpaca":
        conv = Conversation(_alpaca_prompt(record, cols) + [_text_turn("assistant", _get(record, cols["response"]))])
    else:
        conv = Conversation(_turns(record, fmt, cols), _tools(record, cols))
    check_conversation(conv.messages)
    return conv


LF_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
           "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}


def retag_sharegpt(record: dict, cols: dict[str, str], tags: dict[str, str]) -> dict:
    """Turns written with a dataset's own tags (LF `tags`) rewritten to ShareGPT's from/value and role names."""
    names = {**LF_TAGS, **tags}
    roles = {names[k]: LF_TAGS[k] for k in LF_TAGS if k.endswith("_tag") and k not in ("role_tag", "content_tag")}

    def turn(t: Any) -> Any:
        if not isinstance(t, dict) or names["role_tag"] not in t:
            return t
        return {"from": roles.get(t[names["role_tag"]], t[names["role_tag"]]), "value": t.get(names["content_tag"])}

    out = dict(record)
    for key in (cols["messages"], cols["chosen"], cols["rejected"]):
        value = out.get(key)
        out[key] = [turn(t) for t in value] if isinstance(value, list) else turn(value)
    return {k: v for k, v in out.items() if v is not None or k in record}


def _get(record: dict, column: str, required: bool = True) -> Any:
    value = record.get(column)
    if required and (value is None or value == ""):
        raise RecordError(f"missing or empty {column!r}")
    return value


def _text_turn(role: str, content: Any) -> dict:
    if not isinstance(content, str):
        raise RecordError(f"{role} content must be text, got {type(content).__name__}")
    return {"role": role, "content": content}


def _alpaca_prompt(record: dict, cols: dict[str, str]) -> list[dict]:
    """system + history pairs + (instruction \\n input) as the last user turn."""
    messages = []
    system = record.get(cols["system"])
    if system:
        messages.append(_text_turn("system", system))
    history = record.get(cols["history"]) or []
    if not isinstance(history, list):
        raise RecordError(f"{cols['history']!r} must be a list of [instruction, response] pairs")
    for pair in history:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise RecordError(f"{cols['history']!r} entries must be [instruction, response] pairs, got {pair!r}")
        messages += [_text_turn("user", pair[0]), _text_turn("assistant", pair[1])]
    instruction = _get(record, cols["prompt"])
    query = record.get(cols["query"]) or ""
    messages.append(_text_turn("user", f"{instruction}\n{query}" if query else instruction))
    return messages


def _turns(record: dict, fmt: str, cols: dict[str, str]) -> list[dict]:
    raw = _get(record, cols["messages"])
    if not isinstance(raw, list):
        raise RecordError(f"{cols['messages']!r} must be a list of turns, got {type(raw).__name__}")
    if fmt == "openai":
        return [_openai_turn(t, i) for i, t in enumerate(raw)]
    messages = [_sharegpt_turn(t, i) for i, t in enumerate(raw)]
    system = record.get(cols["system"])
    if system and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, _text_turn("system", system))
    return messages


def _openai_turn(turn: Any, i: int) -> dict:
    if not isinstance(turn, dict) or turn.get("role") not in ROLES:
        role = turn.get("role") if isinstance(turn, dict) else turn
        raise RecordError(f"turn {i}: role must be one of {', '.join(ROLES)}, got {role!r}")
    out = {"role": turn["role"], "content": turn.get("content")}
    if turn.get("tool_calls"):
        if turn["role"] != "assistant":
            raise RecordError(f"turn {i}: only assistant turns may have tool_calls")
        out["tool_calls"] = [_tool_call(c, i) for c in turn["tool_calls"]]
    for key in ("tool_call_id", "name"):
        if turn.get(key):
            out[key] = turn[key]
    if out["content"] is None and "tool_calls" not in out:
        raise RecordError(f"turn {i} ({turn['role']}): no content")
    if out["content"] is not None and not isinstance(out["content"], str):
        raise RecordError(f"turn {i} ({turn['role']}): content must be text, got {type(out['content']).__name__}")
    return out


def _tool_call(call: Any, i: int) -> dict:
    fn = call.get("function", call) if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise RecordError(f"turn {i}: a tool call needs a function name, got {call!r}")
    args = fn.get("arguments", {})
    if isinstance(args, str):  # OpenAI sends arguments as JSON text; templates expect a mapping
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            raise RecordError(f"turn {i}: tool call {fn['name']!r} arguments are not valid JSON: {args!r}") from None
    if not isinstance(args, dict):
        raise RecordError(f"turn {i}: tool call {fn['name']!r} arguments must be an object")
    return {"type": "function", "function": {"name": fn["name"], "arguments": args}}


def _sharegpt_turn(turn: Any, i: int) -> dict:
    if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
        raise RecordError(f"turn {i}: a sharegpt turn needs 'from' and 'value', got {turn!r}")
    role = SHAREGPT_ROLES.get(turn["from"])
    if role is None:
        raise RecordError(f"turn {i}: unknown 'from' {turn['from']!r} (expected one of {', '.join(SHAREGPT_ROLES)})")
    if role != "function_call":
        return _text_turn(role, turn["value"])
    try:  # the value is {"name": ..., "arguments": {...}} as JSON text (or a list of them)
        calls = json.loads(turn["value"]) if isinstance(turn["value"], str) else turn["value"]
    except json.JSONDecodeError:
        raise RecordError(f"turn {i}: function_call value is not valid JSON: {turn['value']!r}") from None
    calls = calls if isinstance(calls, list) else [calls]
    return {"role": "assistant", "content": None, "tool_calls": [_tool_call(c, i) for c in calls]}


def _tools(record: dict, cols: dict[str, str]) -> list[dict] | None:
    tools = record.get(cols.get("tools", "tools"))
    if tools in (None, "", []):
        return None
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError:
            raise RecordError("'tools' is not valid JSON") from None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise RecordError("'tools' must be a list of function specs")
    return tools


def _parse_pair(record: dict, fmt: str, cols: dict[str, str]) -> PreferencePair:
    if fmt == "alpaca":
        prompt, tools = _alpaca_prompt(record, cols), None
    else:
        prompt, tools = _turns(record, fmt, cols), _tools(record, cols)
    chosen, rejected = (_reply(record, cols[k], fmt) for k in ("chosen", "rejected"))
    check_conversation(prompt + [chosen])
    check_conversation(prompt + [rejected])
    return PreferencePair(prompt, chosen, rejected, tools)


def _reply(record: dict, column: str, fmt: str) -> dict:
    value = _get(record, column)
    if isinstance(value, str):
        return _text_turn("assistant", value)
    if isinstance(value, list) and len(value) == 1:  # some datasets wrap the reply in a one-turn list
        value = value[0]
    turn = _sharegpt_turn(value, -1) if fmt == "sharegpt" else _openai_turn(value, -1)
    if turn["role"] != "assistant":
        raise RecordError(f"{column!r} must be an assistant reply, got role {turn['role']!r}")
    return turn


# ------------------------------------------------------------------------------------------ structure


def check_conversation(messages: list[dict]) -> None:
    """Turn order rules every chat template relies on; raises RecordError with the first broken rule."""
    if not messages:
        raise RecordError("no turns")
    for i, m in enumerate(messages):
        prev = messages[i - 1]["role"] if i else None
        if m["role"] == "system" and i != 0:
            raise RecordError(f"turn {i}: a system turn may only come first")
        if m["role"] == "tool" and not (prev == "tool" or (prev == "assistant" and messages[i - 1].get("tool_calls"))):
            raise RecordError(f"turn {i}: a tool result must follow an assistant tool call")
        if m["role"] == "assistant" and prev not in ("user", "tool"):
            raise RecordError(f"turn {i}: an assistant turn must follow a user or tool turn, not {prev or 'nothing'}")
        if m["role"] == "user" and prev not in (None, "system", "assistant"):
            raise RecordError(f"turn {i}: a user turn must follow an assistant turn, not {prev}")
        if m["role"] == "assistant" and not m.get("content") and not m.get("tool_calls"):
            raise RecordError(f"turn {i}: empty assistant reply")
    if messages[-1]["role"] != "assistant":
        raise RecordError(f"the last turn must be the assistant's (it is {messages[-1]['role']}): nothing to learn")
