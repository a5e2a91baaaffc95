"""The calculator showcase's data and eval: questions are right and held out, records are exactly what the native
agent sends to a local model (turn by turn), and the scorer reads agent events correctly."""

from __future__ import annotations

import json

import pytest

from athanor.agent.calculator import calculate
from athanor.agent.native import DEFAULT_SYSTEM
from athanor.agent.react import AgentEvent
from athanor.data.formats import parse_record
from athanor.data.registry import load_datasets
from athanor.llm.base import tool_call_message
from athanor.text.chat_format import adapt_to_template
from athanor.text.tool_parsing import parse_tool_calls
from athanor.train.encode import IGNORE_INDEX, encode_conversation
from recipes.calculator.calculator_data import (
    BINARY,
    Question,
    calculator_tool_spec,
    generate,
    to_record,
    write_dataset,
)
from recipes.calculator.calculator_eval import matches, score_events, summarize


def test_questions_are_distinct_deterministic_and_evaluate():
    qs = generate(300)
    assert len({q.text for q in qs}) == 300
    assert [q.text for q in qs] == [q.text for q in generate(300)]
    assert {q.kind for q in qs} == {"binary", "triple", "percent", "power", "word"}
    for q in qs:
        assert calculate(q.expression) == q.value


def test_eval_split_is_held_out_and_uses_unseen_phrasings():
    train = {q.text for q in generate(1000)}
    held = generate(200, split="eval")
    assert not train & {q.text for q in held}
    unseen = [t.split("{")[0] for t in BINARY[1]]  # held-out phrasing openings, e.g. "How much is "
    assert any(q.text.startswith(u) for q in held for u in unseen if u)


def test_dataset_file_loads_through_the_registry_path(tmp_path):
    path = write_dataset(tmp_path / "calc.jsonl", 40, small_talk=0.1)
    samples, reports = load_datasets([str(path)], str(tmp_path), None)
    assert reports[0].num_valid == 44 and reports[0].num_invalid == 0
    native = sum(1 for s in samples if any(m.get("tool_calls") for m in s.messages))
    react = sum(1 for s in samples if any(m["role"] == "assistant" and "Action: calculator" in (m["content"] or "")
                                          for m in s.messages))
    assert native + react == 40 and native > 0 and react > 0  # the default mix: both agents' formats


@pytest.fixture(scope="module")
def tokenizer(smollm2_path):
    from athanor.models.loader import load_checkpoint

    return load_checkpoint(smollm2_path).tokenizer


def _agent_prompt(tokenizer, messages):
    """What LocalChatModel renders for the native agent's messages (llm/local.py), as text."""
    tools = [calculator_tool_spec()]
    adapted, _ = adapt_to_template(tokenizer, messages, tools)
    return tokenizer.apply_chat_template(adapted, add_generation_prompt=True, tools=tools)


def test_training_text_is_what_the_agent_sends_at_every_turn(tokenizer):
    """Turn 1 (question) and turn 2 (after the call and its result): the agent's prompt, rendered as the engine
    renders it, is a prefix of the training text, and the model's labelled reply parses back into the call."""
    q = Question("What is 12 * 7?", "12 * 7", "binary")
    conv = parse_record(to_record(q), "openai")
    msgs, tools = adapt_to_template(tokenizer, conv.messages, conv.tools)
    full = tokenizer.apply_chat_template(msgs, tools=tools)
    user = [{"role": "system", "content": DEFAULT_SYSTEM}, {"role": "user", "content": q.text}]
    turn1 = _agent_prompt(tokenizer, user)
    assert full.startswith(turn1)
    reply = full[len(turn1):].split("<|im_end|>")[0]
    text, calls = parse_tool_calls(reply, {"calculator"})
    assert text == "" and calls[0].name == "calculator"
    assert json.loads(calls[0].arguments) == {"expression": "12 * 7"}
    # The agent records the parsed call and the tool's output, then asks again.
    history = user + [tool_call_message(text, calls), {"role": "tool", "tool_call_id": calls[0].id, "content": "84"}]
    turn2 = _agent_prompt(tokenizer, history)
    assert full.startswith(turn2), (full, turn2)
    assert full[len(turn2):].startswith("The answer is 84.<|im_end|>")


def test_labels_cover_the_call_and_the_answer_only(tokenizer):
    q = Question("What is 3 + 4?", "3 + 4", "binary")
    conv = parse_record(to_record(q), "openai")
    ex = encode_conversation(tokenizer, conv.messages, conv.tools)
    learned = tokenizer.backend.decode([t for t, lab in zip(ex.input_ids, ex.labels) if lab != IGNORE_INDEX],
                                       skip_special_tokens=False)
    assert '"expression": "3 + 4"' in learned and "The answer is 7." in learned
    assert q.text not in learned and DEFAULT_SYSTEM not in learned and learned.count("<|im_end|>") == 2


@pytest.mark.parametrize(("answer", "expected", "ok"), [
    ("The answer is 84.", 84, True), ("12 * 7 = 84", 84, True), ("It is 1,234.", 1234, True),
    ("The answer is 19.15.", 19.15, True), ("about 3.33", 10 / 3, True), ("The answer is 3.", 10 / 3, False),
    ("12 * 7 = 85", 84, False), ("I don't know", 84, False), (None, 84, False), ("-5 degrees", -5, True),
])
def test_answer_matching(answer, expected, ok):
    assert matches(answer, expected) is ok


def test_score_events_reads_the_agent_run():
    q = Question("What is 12 * 7?", "12 * 7", "binary")
    good = [AgentEvent("tool_call", '{"expression": "12*7"}', 1, "calculator", {"expression": "12*7"}),
            AgentEvent("tool_result", "84", 1, "calculator"), AgentEvent("answer", "The answer is 84.", 2)]
    wrong_call = [AgentEvent("tool_call", '{"expression": "12+7"}', 1, "calculator", {"expression": "12+7"}),
                  AgentEvent("tool_result", "19", 1, "calculator"), AgentEvent("answer", "The answer is 19.", 2)]
    bad_args = [AgentEvent("tool_call", '{"x": 1}', 1, "calculator", {"x": 1}),
                AgentEvent("error", "calculator: ...", 1, "calculator"), AgentEvent("answer", "84", 2)]
    no_call = [AgentEvent("answer", "I think it is 84.", 1)]
    outcomes = [score_events(q, ev) for ev in (good, wrong_call, bad_args, no_call)]
    assert [(o.called, o.valid_call, o.correct_call, o.correct) for o in outcomes] == [
        (True, True, True, True), (True, True, False, False), (True, False, False, True), (False, False, False, True)]
    assert summarize(outcomes) == {"n": 4, "called": 0.75, "valid_call": 0.5, "correct_call": 0.25, "correct": 0.75}
