"""The calculator DPO pairs: valid preference records, honest chosen replies, wrong rejected ones, held-out pairs on
questions the training file never asks; and the shipped files are what the generator writes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from athanor.agent.calculator import calculate
from athanor.data.formats import PreferencePair, parse_record
from recipes.calculator.calculator_prefs import EVAL_FILE, TRAIN_FILE, main, make_pairs, misread

DATA = Path(__file__).resolve().parents[2] / "recipes" / "smollm2-calculator" / "data"


def _expression(turn: dict) -> str:
    return json.loads(turn["tool_calls"][0]["function"]["arguments"])["expression"]


@pytest.fixture(scope="module")
def pairs() -> list[dict]:
    return make_pairs(120, "train")


def test_every_record_is_a_valid_pair_with_the_calculator_tool(pairs):
    for record in pairs:
        pair = parse_record(record, "openai", ranking=True)
        assert isinstance(pair, PreferencePair)
        assert [t["function"]["name"] for t in pair.tools] == ["calculator"]
    assert {r["kind"] for r in pairs} == {"call", "work", "expr", "result"}


def test_chosen_is_right_and_rejected_is_wrong(pairs):
    for r in pairs:
        question = r["messages"][1]["content"]
        if r["kind"] == "result":  # after the tool answered: its number vs another number
            result = r["messages"][-1]["content"]
            assert r["chosen"]["content"] == f"The answer is {result}."
            assert r["rejected"]["content"] != r["chosen"]["content"]
            assert r["rejected"]["content"].startswith("The answer is ")
            continue
        value = calculate(_expression(r["chosen"]))
        assert r["messages"][-1]["role"] == "user" and question
        if r["kind"] == "expr":
            assert calculate(_expression(r["rejected"])) != value
        else:  # a direct answer, with or without working, whose number is not the value
            wrong = r["rejected"]["content"].rsplit("The answer is ", 1)[1].rstrip(".")
            assert float(wrong) != pytest.approx(value) and "tool_calls" not in r["rejected"]


def test_held_out_pairs_ask_new_questions():
    train = {r["messages"][1]["content"] for r in make_pairs(200, "train")}
    held = make_pairs(48, "eval")
    assert len(held) == 48 and not train & {r["messages"][1]["content"] for r in held}


def test_misread_always_changes_the_value():
    rng = random.Random(0)
    for expression in ["2 + 2", "7 * 1", "(3 - 3) * 5", "10 / 5", "4 ** 2", "100 * 5 / 100"]:
        for _ in range(20):
            assert calculate(misread(expression, rng)) != calculate(expression)


def test_shipped_files_are_the_generators_output(tmp_path):
    main(["--out-dir", str(tmp_path), "-n", "200", "--num-eval", "48"])  # the command in dpo.yaml
    for name in (TRAIN_FILE, EVAL_FILE):
        assert (tmp_path / name).read_text() == (DATA / name).read_text(), name
