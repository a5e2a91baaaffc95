"""Training data from traces: rated or corrected conversations -> LLaMA-Factory sharegpt records.

`export_traces(store, "sft")` keeps traces whose latest feedback is good (score > 0) and traces with a correction
(the correction replaces the model's final answer); `export_traces(store, "dpo")` makes one preference pair per
corrected trace: the correction is `chosen`, what the model said is `rejected`. The conversation of a trace is its
last model call: that call's input messages (for an agent, every earlier step with its tool calls and results)
plus its reply, as the `llm` span recorded them in gen_ai.input.messages / gen_ai.output.messages.

Records are LLaMA-Factory's sharegpt shape (`conversations` of from/value turns, `system`, `tools` as JSON text;
tool calls are `function_call` turns, results `observation` turns), so the model's own template renders the calls
in both LLaMA-Factory and `athanor train`. `dataset_info_entry` is the registry entry to name the file in a YAML;
it carries the source trace ids as `_trace_ids` (both loaders ignore keys they do not know) for lineage.
Held-out traces (an eval's items) are never exported; the same conversation is exported once.

Not for: storing traces (trace_store.py), the CLI (datasets_cli.py) or HTTP (serve/dataset_routes.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

from athanor import tracing

FORMATS = ("sft", "dpo")
_PAGE = 500
_SINCE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str | float | None, now: float | None = None) -> float | None:
    """'90' (seconds), '15m', '1h', '2d' -> the epoch time that long ago; None -> None."""
    if value is None or value == "":
        return None
    m = _SINCE.fullmatch(str(value).strip())
    if m is None:
        raise ValueError(f"since must be seconds or a duration like 30m, 1h, 2d; got {value!r}")
    return (time.time() if now is None else now) - float(m.group(1)) * _UNITS[m.group(2)]


def export_traces(store, fmt: str = "sft", trace_ids: list[str] | None = None, **filters: Any) -> list[dict]:
    """Records for `fmt` ("sft" or "dpo") from the given traces, or from those `filters` select (TraceStore.list's
    model, since (epoch seconds, or a duration text like "1h"), feedback, errors, name). Each record has a `_trace_id` key naming its source (strip it with
    `strip_meta` before writing, or keep it: loaders ignore unknown columns)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be sft or dpo, got {fmt!r}")
    records, seen = [], set()
    for trace in _traces(store, trace_ids, filters):
        try:
            record = _record(trace, fmt)
        except ValueError:  # a message these formats cannot hold (an unknown role): not training data
            record = None
        if record is None:
            continue
        key = _dedup_key(record)
        if key in seen:
            continue
        seen.add(key)
        records.append(record | {"_trace_id": trace["trace_id"]})
    return records


def _traces(store, trace_ids: list[str] | None, filters: dict[str, Any]):
    """Full traces (with spans and feedback), oldest first, held-out ones left out."""
    if trace_ids is not None:
        for tid in trace_ids:
            trace = store.get(tid)
            if trace is None:
                raise KeyError(tid)
            if not trace["held_out"]:
                yield trace
        return
    filters = dict(filters)
    if isinstance(filters.get("since"), str):
        filters["since"] = parse_since(filters["since"])
    if filters.get("feedback") is None:
        filters["feedback"] = "any"  # only rated traces can be training data
    rows, offset = [], 0
    while page := store.list(limit=_PAGE, offset=offset, **filters):
        rows += page
        offset += len(page)
    for row in reversed(rows):  # store.list is newest first; records come oldest first
        if not row["held_out"]:
            trace = store.get(row["trace_id"])
            if trace is not None:
                yield trace


# --- one trace -> one record -------------------------------------------------------------------------------


def _record(trace: dict, fmt: str) -> dict | None:
    """The record this trace gives for `fmt`, or None when it gives none (unrated, not corrected, no content)."""
    conv = conversation(trace)
    if conv is None:
        return None
    prompt, answer, tools = conv
    feedback = trace.get("feedback") or []
    correction = next((f["correction"] for f in reversed(feedback) if f.get("correction")), None)
    latest = feedback[-1]["score"] if feedback else None
    if fmt == "sft":
        if correction is not None:
            answer = corrected(answer, correction)
        elif latest is None or latest <= 0 or trace.get("status") == "error":
            return None
        return _sharegpt(prompt + answer, tools)
    if correction is None:
        return None
    better = corrected(answer, correction)
    n = len(answer) - 1  # the turns both replies share (an agent's earlier steps)
    if len(better) != len(answer) or better[:n] != answer[:n] or _same(better[-1], answer[-1]):
        return None  # a pair compares one final reply with another; a rewritten tool path is SFT data
    record = _sharegpt(prompt + answer[:n], tools)
    if record is None:
        return None
    record["chosen"], record["rejected"] = _turn(better[-1]), _turn(answer[-1])
    return record


def corrected(answer: list[dict], correction: str) -> list[dict]:
    """The answer turns with a correction applied: text replaces the final reply (earlier tool steps stay); a JSON
    list of messages replaces every turn after the user's question."""
    turns = parse_correction(correction)
    if len(turns) == 1 and turns[0]["role"] == "assistant" and not turns[0].get("tool_calls") and answer \
            and answer[-1].get("role") == "assistant" and not answer[-1].get("tool_calls"):
        return answer[:-1] + turns
    return turns


def conversation(trace: dict) -> tuple[list[dict], list[dict], list[dict] | None] | None:
    """(prompt, answer, tools) of the trace's last model call: prompt ends at the last user turn, answer is what
    came after it (agent steps: tool calls, results, the final reply). None when content was not captured."""
    calls = [s for s in trace.get("spans", []) if s["kind"] == "llm"
             and tracing.INPUT_MESSAGES in s["attributes"] and tracing.OUTPUT_MESSAGES in s["attributes"]]
    if not calls:
        return None
    attrs = calls[-1]["attributes"]
    messages = _messages(attrs[tracing.INPUT_MESSAGES]) + _messages(attrs[tracing.OUTPUT_MESSAGES])[:1]
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if not users or messages[-1].get("role") != "assistant":
        return None
    cut = users[-1] + 1
    tools = attrs.get(tracing.TOOL_DEFINITIONS)
    tools = json.loads(tools) if isinstance(tools, str) else tools
    return messages[:cut], messages[cut:], tools or None


def _messages(value: Any) -> list[dict]:
    """A span's JSON messages: a list of messages, one message, or a completion prompt (text)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return [{"role": "user", "content": value}]
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, dict):
        return [value]
    return [m if isinstance(m, dict) else {"role": "assistant", "content": str(m)} for m in value or []]


def parse_correction(text: str) -> list[dict]:
    """A correction: plain text (the right final answer), or a JSON list of OpenAI messages (the right turns after
    the user's question, e.g. a tool call, its result and the answer)."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            turns = json.loads(stripped)
        except json.JSONDecodeError:
            turns = None
        if isinstance(turns, list) and turns and all(isinstance(t, dict) and "role" in t for t in turns):
            return turns
    return [{"role": "assistant", "content": text}]


# --- OpenAI messages -> LLaMA-Factory sharegpt ---------------------------------------------------------------


def _sharegpt(messages: list[dict], tools: list[dict] | None) -> dict | None:
    """{"conversations": [...], "system"?, "tools"?}; consecutive tool results are one observation turn (LF
    requires human/observation and gpt/function_call turns to alternate)."""
    system = None
    if messages and messages[0].get("role") == "system":
        system, messages = messages[0].get("content") or "", messages[1:]
    turns: list[dict] = []
    for m in messages:
        if m.get("role") == "system":
            return None  # a system turn in the middle has no sharegpt form
        turn = _turn(m)
        if turns and turn["from"] == "observation" == turns[-1]["from"]:
            turns[-1]["value"] += "\n" + turn["value"]
        else:
            turns.append(turn)
    record: dict[str, Any] = {"conversations": turns}
    if system:
        record["system"] = system
    if tools:
        record["tools"] = json.dumps(tools, ensure_ascii=False)
    return record


def _turn(m: dict) -> dict:
    role = m.get("role")
    if role == "assistant" and m.get("tool_calls"):
        calls = [_call(c) for c in m["tool_calls"]]
        return {"from": "function_call", "value": json.dumps(calls[0] if len(calls) == 1 else calls,
                                                             ensure_ascii=False)}
    tag = {"user": "human", "assistant": "gpt", "tool": "observation"}.get(role)
    if tag is None:
        raise ValueError(f"a trace message has role {role!r}; expected user, assistant or tool")
    return {"from": tag, "value": _text(m.get("content"))}


def _call(call: dict) -> dict:
    fn = call.get("function", call)
    args = fn.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            pass
    return {"name": fn.get("name"), "arguments": args}


def _text(content: Any) -> str:
    if isinstance(content, list):  # OpenAI content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _same(a: dict, b: dict) -> bool:
    return _turn(a) == _turn(b)


def _dedup_key(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


# --- files ---------------------------------------------------------------------------------------------------


def strip_meta(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def dataset_info_entry(file_name: str, fmt: str, trace_ids: list[str]) -> dict:
    """The dataset_info.json entry (LLaMA-Factory's registry) that names the exported file."""
    entry: dict[str, Any] = {"file_name": file_name, "formatting": "sharegpt",
                             "columns": {"messages": "conversations", "system": "system", "tools": "tools"}}
    if fmt == "dpo":
        entry["ranking"] = True
        entry["columns"] |= {"chosen": "chosen", "rejected": "rejected"}
    entry["_trace_ids"] = trace_ids
    return entry


def write_dataset(records: list[dict], out: str | Path, fmt: str, name: str | None = None) -> tuple[Path, str]:
    """Write `records` as JSON Lines to `out` and add (or replace) its entry in dataset_info.json beside it.
    Returns (path, registry name); the name defaults to the file's stem."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_jsonl(records), encoding="utf-8")
    name = name or out.stem
    info_path = out.parent / "dataset_info.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    ids = list(dict.fromkeys(r["_trace_id"] for r in records if "_trace_id" in r))
    info[name] = dataset_info_entry(out.name, fmt, ids)
    info_path.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out, name


def to_jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(strip_meta(r), ensure_ascii=False) + "\n" for r in records)
