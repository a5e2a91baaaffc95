"""Every record format into canonical messages; every file type; bad records counted with the first reason."""

from __future__ import annotations

import csv
import json

import pytest

from athanor.data.formats import Conversation, PreferencePair, RecordError, parse_record, read_records
from athanor.data.registry import DatasetError, load_datasets, load_samples, resolve_dataset, validate_datasets


def test_alpaca_with_system_history_and_input():
    rec = {"instruction": "Add", "input": "2+2", "output": "4", "system": "Math bot.",
           "history": [["hi", "hello"]]}
    conv = parse_record(rec, "alpaca")
    assert conv.messages == [
        {"role": "system", "content": "Math bot."},
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "Add\n2+2"}, {"role": "assistant", "content": "4"},
    ]


def test_sharegpt_function_call_and_observation_become_tool_calls_and_tool_turns():
    rec = {"conversations": [
        {"from": "human", "value": "12*7?"},
        {"from": "function_call", "value": json.dumps({"name": "calculator", "arguments": {"expr": "12*7"}})},
        {"from": "observation", "value": "84"},
        {"from": "gpt", "value": "84."},
    ], "system": "Use tools.", "tools": json.dumps([{"name": "calculator", "parameters": {}}])}
    conv = parse_record(rec, "sharegpt")
    assert [m["role"] for m in conv.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert conv.messages[2]["tool_calls"] == [
        {"type": "function", "function": {"name": "calculator", "arguments": {"expr": "12*7"}}}]
    assert conv.tools == [{"name": "calculator", "parameters": {}}]


def test_openai_messages_with_tool_calls_parse_argument_json():
    rec = {"messages": [
        {"role": "user", "content": "12*7?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": '{"expr": "12*7"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "84"},
        {"role": "assistant", "content": "84."},
    ]}
    conv = parse_record(rec, "openai")
    assert conv.messages[1]["tool_calls"][0]["function"]["arguments"] == {"expr": "12*7"}
    assert conv.messages[2] == {"role": "tool", "content": "84", "tool_call_id": "c1"}


def test_preference_pairs_in_alpaca_and_openai_shape():
    pair = parse_record({"instruction": "2+2?", "chosen": "4", "rejected": "5"}, "alpaca", ranking=True)
    assert isinstance(pair, PreferencePair)
    assert pair.prompt == [{"role": "user", "content": "2+2?"}] and pair.rejected["content"] == "5"
    pair = parse_record({"messages": [{"role": "user", "content": "hi"}],
                         "chosen": {"role": "assistant", "content": "hello"},
                         "rejected": [{"role": "assistant", "content": "go away"}]}, "openai", ranking=True)
    assert pair.chosen == {"role": "assistant", "content": "hello"} and pair.rejected["content"] == "go away"


@pytest.mark.parametrize("rec, fmt, reason", [
    ({"instruction": "x"}, "alpaca", "missing or empty 'output'"),
    ({"conversations": [{"from": "alien", "value": "x"}]}, "sharegpt", "unknown 'from'"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                   {"role": "assistant", "content": "c"}]}, "openai", "turn 1: a user turn must follow"),
    ({"messages": [{"role": "user", "content": "a"}]}, "openai", "the last turn must be the assistant's"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "1"},
                   {"role": "assistant", "content": "c"}]}, "openai", "tool result must follow"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]}, "openai",
     "empty assistant reply"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [
        {"function": {"name": "f", "arguments": "{bad"}}]}]}, "openai", "not valid JSON"),
    ({"instruction": "x", "chosen": "a"}, "alpaca", "missing or empty 'rejected'"),
])
def test_bad_records_name_the_reason(rec, fmt, reason):
    with pytest.raises(RecordError, match=reason):
        parse_record(rec, fmt, ranking="chosen" in rec)


ROWS = [{"instruction": f"q{i}", "output": f"a{i}", "history": [["h", "i"]]} for i in range(3)]


def test_json_jsonl_and_csv_read_the_same_records(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps(ROWS))
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    with open(tmp_path / "d.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["instruction", "output", "history"])
        w.writeheader()
        w.writerows({**r, "history": json.dumps(r["history"])} for r in ROWS)
    for name in ("d.json", "d.jsonl", "d.csv"):
        assert read_records(tmp_path / name) == ROWS, name


def test_parquet(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet")
    assert read_records(tmp_path / "d.parquet") == ROWS


def test_validation_counts_every_bad_record_and_shows_the_first(tmp_path):
    rows = [ROWS[0], {"instruction": "no answer"}, ROWS[1], {"instruction": ""}, ROWS[2]]
    (tmp_path / "mixed.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    samples, report = load_samples(resolve_dataset("mixed.jsonl", tmp_path))
    assert (report.num_valid, report.num_invalid) == (3, 2) and len(samples) == 3
    assert report.first_error[0] == 1 and "output" in report.first_error[1]
    assert "3 valid, 2 invalid; first bad record #1: missing or empty 'output'" in report.summary()
    with pytest.raises(DatasetError, match="2 invalid"):
        load_datasets(["mixed.jsonl"], tmp_path)
    samples, _ = load_datasets(["mixed.jsonl"], tmp_path, allow_invalid=True)
    assert all(isinstance(s, Conversation) for s in samples)


def test_registry_names_columns_and_did_you_mean(tmp_path):
    (tmp_path / "qa.json").write_text(json.dumps([{"q": "2+2?", "a": "4"}]))
    (tmp_path / "dataset_info.json").write_text(json.dumps(
        {"math_qa": {"file_name": "qa.json", "columns": {"prompt": "q", "response": "a"}}}))
    samples, _ = load_datasets(["math_qa"], tmp_path)
    assert samples[0].messages[-1] == {"role": "assistant", "content": "4"}
    with pytest.raises(DatasetError, match="did you mean 'math_qa'"):
        resolve_dataset("math_q", tmp_path)


def test_format_is_sniffed_for_plain_files(tmp_path):
    (tmp_path / "p.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "a"}],
                                                  "chosen": "b", "rejected": "c"}))
    spec = resolve_dataset("p.jsonl", tmp_path)
    assert (spec.formatting, spec.ranking) == ("openai", True)


def test_validate_datasets_reports_without_raising(tmp_path):
    (tmp_path / "ok.jsonl").write_text(json.dumps(ROWS[0]))
    (tmp_path / "bad.jsonl").write_text(json.dumps({"conversations": [{"from": "human", "value": "hi"}]}))
    ok, bad = validate_datasets(["ok.jsonl", "bad.jsonl"], tmp_path)
    assert (ok.num_valid, ok.num_invalid, ok.first_error) == (1, 0, None)
    assert (bad.num_valid, bad.num_invalid) == (0, 1) and "last turn must be the assistant's" in bad.summary()
