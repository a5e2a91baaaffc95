"""serve/reasoning.py: Ollama's `think` rules and the count of a reply's thinking tokens."""

from __future__ import annotations

import pytest

from athanor.serve.errors import ServeError
from athanor.serve.reasoning import check_think, ollama_think, openai_think, thinking_tokens


class CharTokenizer:
    """One token per character (id = code point), enough for the counting rules."""

    chat_template = None

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)


class Thinker:
    def __init__(self, template):
        self.tokenizer = CharTokenizer()
        self.tokenizer.chat_template = template


def ids(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_thinking_tokens_end_with_the_closing_tag():
    tok = CharTokenizer()
    reply = "<think>abc</think>answer"
    assert thinking_tokens(tok, ids(reply), "abc") == len("<think>abc</think>")
    assert thinking_tokens(tok, ids("<think>never closed"), "never closed") == len("<think>never closed")
    assert thinking_tokens(tok, ids("just text"), "") == 0


def test_ollama_think_rules():
    thinker, plain = Thinker("{{ '<think>' }}"), Thinker("{{ messages }}")
    assert ollama_think(thinker, None, "m") is True  # a thinking model thinks unless told not to
    assert ollama_think(thinker, False, "m") is False
    assert ollama_think(thinker, "low", "m") is True
    assert ollama_think(plain, None, "m") is None and ollama_think(plain, False, "m") is None
    for think in (True, "high"):
        with pytest.raises(ServeError, match='^"m" does not support thinking$'):
            ollama_think(plain, think, "m")
    with pytest.raises(ServeError, match="think must be"):
        check_think("max")
    assert openai_think(thinker, "none", None) is False
    assert openai_think(thinker, None, {"enable_thinking": False}) is False
    assert openai_think(thinker, "high", None) is True and openai_think(plain, "high", None) is None
