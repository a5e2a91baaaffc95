"""context_limit: the "prompt no longer fits" errors of each ChatModel backend are recognised, nothing else is."""

from __future__ import annotations

import pytest

from athanor.agent.context import context_limit, context_stop_message
from athanor.errors import ContextLengthError


@pytest.mark.parametrize("error, limit", [
    (ContextLengthError("prompt is 1547 tokens; the context holds 1456 (prompt + at least one new token)"), 1456),
    (ValueError("Error code: 400 - {'error': {'message': 'prompt is 900 tokens; the context holds 700'}}"), 700),
    (ValueError("This model's maximum context length is 2048 tokens. However, you requested 2100 tokens"), 2048),
    (ContextLengthError("too long"), 0),
    (ValueError("temperature must be >= 0"), None),
    (RuntimeError("connection refused"), None),
])
def test_context_errors_are_recognised(error, limit):
    assert context_limit(error) == limit


def test_stop_message_names_the_context():
    assert context_stop_message(700) == "stopped: the conversation no longer fits the 700-token context"
