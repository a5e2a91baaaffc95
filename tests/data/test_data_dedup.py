"""Exact duplicates (case/whitespace apart) and MinHash near-duplicates are dropped; distinct samples stay."""

from __future__ import annotations

import json

import pytest

from athanor.data.dedup import dedup_dataset, dedup_samples
from athanor.data.formats import Conversation

pytest.importorskip("datasketch")

LONG = ("Photosynthesis converts light energy into chemical energy stored in glucose. It happens in the "
        "chloroplasts of plant cells, using water and carbon dioxide and releasing oxygen as a by-product.")


def _conv(user: str, reply: str) -> Conversation:
    return Conversation([{"role": "user", "content": user}, {"role": "assistant", "content": reply}])


def test_exact_and_near_duplicates_are_dropped_first_kept():
    samples = [
        _conv("Explain photosynthesis.", LONG),
        _conv("explain   PHOTOSYNTHESIS.", LONG.upper()),                      # exact after normalising
        _conv("Explain photosynthesis.", LONG.replace("glucose", "sugars")),  # one word changed: near
        _conv("What is 2+2?", "4"),
        _conv("What is 2+3?", "5"),                                          # short and different: kept
    ]
    result = dedup_samples(samples, near_threshold=0.8)
    assert result.exact == [(1, 0)] and result.near == [(2, 0)]
    assert result.kept == [samples[0], samples[3], samples[4]]
    only_exact = dedup_samples(samples, near_threshold=None)
    assert only_exact.exact == [(1, 0)] and not only_exact.near and len(only_exact.kept) == 4


def test_tool_calls_make_samples_different():
    call = {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "1+1"}}}
    a = Conversation([{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": None, "tool_calls": [call]},
                      {"role": "tool", "content": "2"}, {"role": "assistant", "content": "2"}])
    other = {**call, "function": {**call["function"], "arguments": {"expression": "1+2"}}}
    b = Conversation([a.messages[0], {**a.messages[1], "tool_calls": [other]}, *a.messages[2:]])
    assert len(dedup_samples([a, b], near_threshold=None).kept) == 2


def test_dedup_dataset_writes_the_kept_samples(tmp_path):
    rows = [{"instruction": "Explain photosynthesis.", "output": LONG}] * 3 + [{"instruction": "hi", "output": "hello"}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    result = dedup_dataset("d.jsonl", tmp_path / "out.jsonl", tmp_path)
    assert result.summary() == "2 kept, 2 exact duplicates, 0 near duplicates dropped"
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2
