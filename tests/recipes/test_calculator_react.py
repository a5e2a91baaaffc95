"""The calculator showcase in the ReAct format: generated records are exactly what the real ReAct agent sends (and
parse back with our ReAct parser), the shipped mix holds both formats and no held-out question, and the eval's
react path scores real agent runs (a run stopped by max_iterations is wrong, never an answer)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from athanor.agent.calculator import calculator
from athanor.agent.react import ReActAgent
from athanor.agent.react_parser import Action, Final, parse_react
from athanor.data.formats import parse_record
from athanor.llm.base import ChatResponse, ToolCall, Usage
from athanor.text.chat_format import adapt_to_template
from athanor.train.encode import IGNORE_INDEX, encode_conversation
from recipes.calculator.calculator_data import (
    Question,
    generate,
    react_small_talk_record,
    to_react_record,
    write_dataset,
)
from recipes.calculator.calculator_eval import make_agent, run_questions, summarize
from tests.agent.scripted import ScriptedChatModel

RECIPE_DATA = Path(__file__).resolve().parents[2] / "recipes" / "smollm2-calculator" / "data"
CALL = 'Thought: Do I need to use a tool? Yes\nAction: calculator\nAction Input: {"expression": "12 * 7"}'


def _first_user(record: dict) -> str:
    return next(m["content"] for m in record["messages"] if m["role"] == "user")


def _is_react(record: dict) -> bool:
    return "tools" not in record and record["messages"][0]["content"] == ReActAgent(None, [calculator]).system_prompt()


def test_react_record_is_what_the_agent_sends_at_every_step():
    """A scripted model (not the generator's replay) replays the record's replies through the real agent: its two
    requests are the record's prefixes, so system prompt, question and Observation all match."""
    q = Question("What is 12 * 7?", "12 * 7", "binary")
    messages = to_react_record(q)["messages"]
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    model = ScriptedChatModel(replies)
    result = ReActAgent(model, [calculator]).run(q.text)
    assert result.answer == "The answer is 84."
    assert [c["messages"] for c in model.calls] == [messages[:2], messages[:4]]
    assert messages[0] == {"role": "system", "content": ReActAgent(model, [calculator]).system_prompt()}
    assert "> calculator:" in messages[0]["content"] and messages[3] == {"role": "user", "content": "Observation: 84"}


def test_react_replies_parse_with_our_parser():
    for q in generate(60):
        replies = [m["content"] for m in to_react_record(q)["messages"] if m["role"] == "assistant"]
        action, final = (parse_react(r) for r in replies)
        assert isinstance(action, Action) and action.tool == "calculator"
        assert json.loads(action.tool_input) == {"expression": q.expression}
        assert isinstance(final, Final) and final.answer == f"The answer is {q.answer}."
    chat = react_small_talk_record(random.Random(3))["messages"]
    assert len(chat) == 3 and isinstance(parse_react(chat[-1]["content"]), Final)


def test_shipped_data_is_the_generator_mix_and_holds_no_eval_question(tmp_path):
    shipped = (RECIPE_DATA / "calculator_train.jsonl").read_text(encoding="utf-8")
    assert write_dataset(tmp_path / "again.jsonl", 1000).read_text(encoding="utf-8") == shipped  # reproducible
    records = [json.loads(line) for line in shipped.splitlines()]
    num_react = sum(_is_react(r) for r in records)
    num_native = sum("tools" in r for r in records)
    assert num_react + num_native == len(records) == 1050
    assert 0.4 < num_react / len(records) < 0.6
    trained = {_first_user(r) for r in records}
    for n in (200, 500):
        assert not trained & {q.text for q in generate(n, split="eval")}


def test_react_share_zero_and_one(tmp_path):
    native = [json.loads(x) for x in write_dataset(tmp_path / "a.jsonl", 20, react_share=0.0).read_text().splitlines()]
    react = [json.loads(x) for x in write_dataset(tmp_path / "b.jsonl", 20, react_share=1.0).read_text().splitlines()]
    assert all("tools" in r for r in native) and all(_is_react(r) for r in react)
    with pytest.raises(ValueError, match="react_share"):
        write_dataset(tmp_path / "c.jsonl", 5, react_share=1.5)


@pytest.fixture(scope="module")
def tokenizer(smollm2_path):
    from athanor.models.loader import load_checkpoint

    return load_checkpoint(smollm2_path).tokenizer


def test_react_training_text_extends_the_engine_prompt_and_labels_only_replies(tokenizer):
    """LocalChatModel renders the agent's request (no tools) as the prefix of the training text; the loss covers
    both replies and never the prompt or the Observation."""
    q = Question("What is 3 + 4?", "3 + 4", "binary")
    conv = parse_record(to_react_record(q), "openai")
    msgs, tools = adapt_to_template(tokenizer, conv.messages, conv.tools)
    full = tokenizer.apply_chat_template(msgs, tools=tools)
    for k in (2, 4):  # the agent's request at step 1 and step 2
        request, _ = adapt_to_template(tokenizer, conv.messages[:k], None)
        assert full.startswith(tokenizer.apply_chat_template(request, add_generation_prompt=True))
    ex = encode_conversation(tokenizer, conv.messages, conv.tools)
    learned = tokenizer.backend.decode([t for t, lab in zip(ex.input_ids, ex.labels) if lab != IGNORE_INDEX],
                                       skip_special_tokens=False)
    assert 'Action Input: {"expression": "3 + 4"}' in learned and "AI: The answer is 7." in learned
    assert "Observation" not in learned and q.text not in learned and learned.count("<|im_end|>") == 2


def _react_outcomes(replies: list[str], *, repeat_last: bool = False):
    q = Question("What is 12 * 7?", "12 * 7", "binary")
    model = ScriptedChatModel(replies, repeat_last=repeat_last)
    return run_questions(model, [q], agent="react")[0], model


def test_eval_react_path_scores_real_agent_runs():
    good, model = _react_outcomes([CALL, "Thought: Do I need to use a tool? No\nAI: The answer is 84."])
    assert (good.called, good.valid_call, good.correct_call, good.correct, good.stopped) == (True, True, True, True, None)
    assert model.calls[0]["options"]["stop"] and model.calls[0]["tools"] is None  # the ReAct agent, not native
    assert model.calls[1]["messages"][-1]["content"] == "Observation: 84"  # the real calculator ran
    bad_tool, _ = _react_outcomes(["Action: abacus\nAction Input: 12*7", "AI: 84"])
    assert (bad_tool.called, bad_tool.valid_call, bad_tool.correct) == (True, False, True)
    no_call, _ = _react_outcomes(["Thought: Do I need to use a tool? No\nAI: 85"])
    assert (no_call.called, no_call.correct) == (False, False)
    assert summarize([good, bad_tool, no_call])["correct"] == round(2 / 3, 4)


def test_eval_counts_a_max_iterations_stop_as_wrong():
    """A model that calls the tool right every step but never answers: the run stops after 3 steps; the right
    number in its last Observation must not count as an answer."""
    looping, model = _react_outcomes([CALL], repeat_last=True)
    assert len(model.calls) == 3 and looping.stopped == "stopped after 3 steps"
    assert (looping.called, looping.valid_call, looping.correct_call) == (True, True, True)
    assert looping.correct is False and looping.answer is None
    # The same ending through the native agent: a model that only ever calls the calculator.
    call = ChatResponse("", [ToolCall("c0", "calculator", '{"expression": "12 * 7"}')], "tool_calls", Usage())
    q = Question("What is 12 * 7?", "12 * 7", "binary")
    native = run_questions(ScriptedChatModel([call], repeat_last=True), [q], agent="native")[0]
    assert native.stopped == "stopped after 3 steps" and native.correct is False and native.valid_call


def test_unknown_agent_is_refused():
    with pytest.raises(ValueError, match="unknown agent"):
        make_agent("plan-and-execute", ScriptedChatModel([]))
