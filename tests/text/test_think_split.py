"""ThinkSplitter: a reasoning reply's <think> block split from its answer, fed as the engine decodes it (tags cut
across pieces), matching the whole-reply split and vLLM's deepseek_r1 / qwen3 parser rules."""

from __future__ import annotations

import random

import pytest

from athanor.text.reasoning import ThinkSplitter, split_thinking

REPLY = "<think>\nThe user greets me. I greet back.\n</think>\n\nHello! How can I help?"


def _stream(text: str, cuts: list[int], started: bool = False) -> tuple[str, str, list[tuple[str, str]]]:
    s = ThinkSplitter(started)
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    out = [s.feed(p) for p in pieces] + [s.finish()]
    return "".join(t for t, _ in out), "".join(c for _, c in out), out


def test_whole_reply():
    assert split_thinking(REPLY) == ("The user greets me. I greet back.\n", "Hello! How can I help?")


@pytest.mark.parametrize("seed", range(20))
def test_any_cut_of_the_stream_gives_the_whole_split(seed):
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(REPLY)), rng.randint(1, 20)))
    thinking, content, out = _stream(REPLY, cuts)
    assert (thinking, content) == split_thinking(REPLY)
    assert not any("<" in t and "think>" in t for t, _ in out)  # no tag text reaches either side


def test_tags_split_across_tokens_are_held_until_known():
    s = ThinkSplitter()
    assert s.feed("<th") == ("", "")
    assert s.feed("ink>ok") == ("ok", "")
    assert s.feed(" so </th") == (" so ", "")  # "</th" may be the closing tag: held
    assert s.feed("ink>  A") == ("", "A")
    assert s.feed("<think> stays") == ("", "<think> stays")  # after the block everything is content
    assert s.finish() == ("", "")


def test_a_held_partial_tag_that_is_not_a_tag_is_released():
    s = ThinkSplitter()
    assert s.feed("<think>a </t") == ("a ", "")
    assert s.feed("able>") == ("</table>", "")


def test_no_block_is_all_content():
    assert split_thinking("Just an answer.") == ("", "Just an answer.")
    s = ThinkSplitter()
    assert s.feed("  ") == ("", "")
    assert s.feed("<") == ("", "")  # could still open a block
    assert s.feed("b>bold") == ("", "  <b>bold")


def test_prompt_opened_block_thinks_from_the_first_token():
    assert split_thinking("\nreasoning here</think>\n\nanswer", started=True) == ("reasoning here", "answer")


def test_cut_inside_the_block_is_all_thinking():
    thinking, content, _ = _stream("<think>still thinking </thi", [3, 12])
    assert (thinking, content) == ("still thinking </thi", "")
    assert split_thinking("never closed", started=True) == ("never closed", "")


def test_fed_token_by_token_with_a_real_tokenizer(tiny_hf_dir):
    """The tiny BPE tokenizer has no <think> token: the tags arrive cut across several tokens."""
    from athanor.text.tokenizer import Tokenizer

    tok = Tokenizer.from_hf_dir(tiny_hf_dir)
    ids = tok.encode(REPLY, add_special_tokens=False)
    pieces = [tok.decode(ids[:i + 1]) for i in range(len(ids))]
    pieces = [b[len(a):] for a, b in zip(["", *pieces], pieces)]
    assert "".join(pieces) == REPLY
    assert not any(p in ("<think>", "</think>") for p in pieces)  # the tags really are split
    s = ThinkSplitter()
    out = [s.feed(p) for p in pieces] + [s.finish()]
    assert ("".join(t for t, _ in out), "".join(c for _, c in out)) == split_thinking(REPLY)
