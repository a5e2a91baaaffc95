"""Tool calls in a local model's text: Hermes/Qwen <tool_call> blocks and Llama-3 JSON; prose stays prose."""

from __future__ import annotations

import json

import pytest

from athanor.text.tool_parsing import parse_tool_calls

NAMES = {"calculator", "search"}


def test_hermes_blocks_parallel_and_surrounding_text():
    text = ('Let me compute.\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "17*23"}}\n</tool_call>\n'
            '<tool_call>{"name": "search", "arguments": {"q": "x"}}</tool_call>')
    rest, calls = parse_tool_calls(text, NAMES)
    assert rest == "Let me compute."
    assert [(c.id, c.name, json.loads(c.arguments)) for c in calls] == [
        ("call_0", "calculator", {"expression": "17*23"}), ("call_1", "search", {"q": "x"})]


def test_unclosed_block_at_the_end_of_generation_still_counts():
    _, calls = parse_tool_calls('<tool_call>{"name": "calculator", "arguments": {"expression": "1+1"}}', NAMES)
    assert [c.name for c in calls] == ["calculator"]


@pytest.mark.parametrize("text", [
    '{"name": "calculator", "parameters": {"expression": "2+2"}}',
    '```json\n{"name": "calculator", "arguments": {"expression": "2+2"}}\n```',
    '[{"name": "calculator", "arguments": {"expression": "2+2"}}]',
])
def test_llama_style_json_replies(text):
    rest, calls = parse_tool_calls(text, NAMES)
    assert rest == "" and len(calls) == 1 and json.loads(calls[0].arguments) == {"expression": "2+2"}


@pytest.mark.parametrize("text", [
    "The answer is 391.",
    '{"name": "rm_rf", "arguments": {}}',  # not an offered tool
    '[{"name": "calculator", "arguments": {}}, {"name": "nope"}]',  # half understood: all stays text
    "<tool_call>not json</tool_call>",
    'Here is JSON: {"name": "calculator"}',  # prose around JSON is not a call
])
def test_everything_else_stays_text(text):
    rest, calls = parse_tool_calls(text, NAMES)
    assert calls == [] and rest == text
