"""`athanor data convert` and `athanor data stats`: any supported dataset -> OpenAI-messages JSONL; quick counts.

For: writing the canonical form (what every format is parsed into) back out as OpenAI chat records (tool call
arguments as JSON text, as the OpenAI API sends them), and summary numbers (samples, turns, tool calls, lengths).

Not for: cleaning or dedup (clean.py / dedup.py), or token counts with a model's template (train/encode.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from athanor.data.formats import Conversation, PreferencePair
from athanor.data.registry import ValidationReport, load_samples, resolve_dataset


def to_openai(sample: Conversation | PreferencePair) -> dict:
    """One canonical sample -> an OpenAI-style record ({"messages", "tools"} or {"messages", "chosen", "rejected"})."""
    if isinstance(sample, PreferencePair):
        record = {"messages": [_openai_message(m) for m in sample.prompt],
                  "chosen": _openai_message(sample.chosen), "rejected": _openai_message(sample.rejected)}
    else:
        record = {"messages": [_openai_message(m) for m in sample.messages]}
    if sample.tools:
        record["tools"] = sample.tools
    return record


def _openai_message(m: dict) -> dict:
    out = dict(m)
    if m.get("tool_calls"):
        out["tool_calls"] = [{"type": "function", "function": {
            "name": c["function"]["name"], "arguments": json.dumps(c["function"]["arguments"], ensure_ascii=False)}}
            for c in m["tool_calls"]]
    return out


def convert_dataset(name: str, out_path: str | Path, dataset_dir: str | Path | None = None) -> ValidationReport:
    """Write every valid sample of `name` as OpenAI-messages JSONL; the report says what was skipped and why."""
    samples, report = load_samples(resolve_dataset(name, dataset_dir))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(to_openai(sample), ensure_ascii=False) + "\n" for sample in samples)
    return report


def dataset_stats(name: str, dataset_dir: str | Path | None = None) -> dict:
    """Counts for `athanor data stats`: samples (valid/invalid), turns, tool calls, reply lengths in characters."""
    samples, report = load_samples(resolve_dataset(name, dataset_dir))
    conversations = [s.prompt + [s.chosen] if isinstance(s, PreferencePair) else s.messages for s in samples]
    replies = [m for conv in conversations for m in conv if m["role"] == "assistant"]
    lengths = sorted(len(m.get("content") or "") for m in replies)
    return {
        "name": name, "num_valid": report.num_valid, "num_invalid": report.num_invalid,
        "num_preference_pairs": sum(isinstance(s, PreferencePair) for s in samples),
        "num_turns": sum(len(c) for c in conversations),
        "num_assistant_turns": len(replies),
        "num_tool_calls": sum(len(m.get("tool_calls") or []) for m in replies),
        "num_with_tools": sum(1 for s in samples if s.tools),
        "reply_chars_median": lengths[len(lengths) // 2] if lengths else 0,
        "reply_chars_max": lengths[-1] if lengths else 0,
    }
