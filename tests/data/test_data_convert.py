"""convert: every format -> OpenAI JSONL that reads back to the same canonical samples; stats on the shipped data."""

from __future__ import annotations

import json
from pathlib import Path

from athanor.data.convert import convert_dataset, dataset_stats
from athanor.data.registry import load_samples, resolve_dataset

RECIPE_DATA = Path(__file__).resolve().parents[2] / "recipes" / "data"


def test_convert_round_trips_sharegpt_with_tool_calls_and_alpaca(tmp_path):
    for name in ("calculator_tiny", "identity_tiny"):
        report = convert_dataset(name, tmp_path / f"{name}.jsonl", RECIPE_DATA)
        assert report.num_invalid == 0
        original, _ = load_samples(resolve_dataset(name, RECIPE_DATA))
        converted, report = load_samples(resolve_dataset(str(tmp_path / f"{name}.jsonl")))
        assert resolve_dataset(str(tmp_path / f"{name}.jsonl")).formatting == "openai"
        assert report.num_invalid == 0 and converted == original
    first = json.loads((tmp_path / "calculator_tiny.jsonl").read_text().splitlines()[0])
    call = first["messages"][2]["tool_calls"][0]["function"]
    assert isinstance(call["arguments"], str) and json.loads(call["arguments"]) == {"expression": "12 * 7"}


def test_convert_keeps_preference_pairs_and_skips_bad_records(tmp_path):
    rows = [{"instruction": "2+2?", "chosen": "4", "rejected": "5"}, {"instruction": "3+3?", "chosen": "6"}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    report = convert_dataset("p.jsonl", tmp_path / "out.jsonl", tmp_path)
    assert (report.num_valid, report.num_invalid) == (1, 1)
    assert json.loads((tmp_path / "out.jsonl").read_text()) == {
        "messages": [{"role": "user", "content": "2+2?"}],
        "chosen": {"role": "assistant", "content": "4"}, "rejected": {"role": "assistant", "content": "5"}}


def test_stats_of_the_shipped_calculator_data():
    stats = dataset_stats("calculator_tiny", RECIPE_DATA)
    assert stats["num_valid"] == 4 and stats["num_invalid"] == 0
    assert stats["num_tool_calls"] == 4 and stats["num_with_tools"] == 4
    assert stats["num_assistant_turns"] == 8 and stats["num_turns"] == 20  # system, user, call, tool, answer
