"""Reasoning models on the APIs: Ollama's `think` and OpenAI-style `reasoning_content` (as vLLM serves it).

A model "thinks" when its chat template renders a reasoning block (the same test as /api/show's "thinking"
capability, model_details.py). For such a model:
- Ollama `think` (true | false | "high" | "medium" | "low"; unset means true, as Ollama does for thinking models):
  false renders the template with `enable_thinking=False` (Qwen3's switch: an empty block in the prompt, so the
  model answers directly); the reply's `<think>` block becomes `message.thinking` / `thinking`.
- OpenAI chat: the block becomes `reasoning_content` in the message or the stream's deltas (vLLM's field), and
  `chat_template_kwargs: {"enable_thinking": false}` or `reasoning_effort: "none"` turn thinking off;
  `reasoning_effort` also reaches the template as a variable, as vLLM passes it.
A model without thinking asked to think gets Ollama's 400: '"NAME" does not support thinking'.
Not for the splitting itself (athanor/text/reasoning.py) nor the response shapes (the API modules).
"""

from __future__ import annotations

from typing import Any

from athanor.serve.errors import ServeError
from athanor.text.reasoning import START, ThinkSplitter

_LEVELS = ("high", "medium", "low")


def supports_thinking(llm) -> bool:
    from athanor.serve.model_details import template_thinks

    return template_thinks(llm.tokenizer.chat_template)


def check_think(think: Any) -> None:
    """The shape of Ollama's `think` (before the model is known)."""
    if think is None or isinstance(think, bool) or think in _LEVELS:
        return
    raise ServeError(f"think must be true, false, \"high\", \"medium\" or \"low\", got {think!r}")


def ollama_think(llm, think: Any, model: str) -> bool | None:
    """Ollama's rule: a thinking model thinks unless told false; asking a non-thinking model to think is a 400.
    -> True (think and split), False (thinking off), None (the model has no thinking)."""
    check_think(think)
    if not supports_thinking(llm):
        if think is not None and think is not False:
            raise ServeError(f"{model!r} does not support thinking".replace("'", '"'))
        return None
    return think is not False


def openai_think(llm, reasoning_effort: str | None, template_kwargs: dict | None) -> bool | None:
    """vLLM's switches: `chat_template_kwargs.enable_thinking` or `reasoning_effort: "none"` turn it off.
    -> True / False as for Ollama, None for a model without thinking (nothing to split)."""
    if not supports_thinking(llm):
        return None
    enabled = (template_kwargs or {}).get("enable_thinking")
    return not (enabled is False or reasoning_effort == "none")


def template_kwargs(think: bool | None, level: Any = None, extra: dict | None = None) -> dict:
    """The extra template variables: enable_thinking (when the model thinks), reasoning_effort (a level)."""
    out = dict(extra or {})
    if think is not None:
        out["enable_thinking"] = think
    if isinstance(level, str) and level != "none":
        out["reasoning_effort"] = level
    return out


def splitter(llm, prompt_ids: list[int], think: bool | None) -> ThinkSplitter | None:
    """A splitter for this reply when it may think (None: no splitting). A prompt that ends by opening the block
    (DeepSeek-R1's template) makes the reply start inside it."""
    if not think:
        return None
    tail = llm.tokenizer.decode(prompt_ids[-8:], skip_special_tokens=False)
    return ThinkSplitter(started=tail.rstrip().endswith(START))


def split_all(split: ThinkSplitter | None, text: str) -> tuple[str, str]:
    """A whole (non-streamed) reply -> (thinking, content); no splitter: all content."""
    if split is None:
        return "", text
    split.feed(text)
    split.finish()
    return split.thinking, split.content


def reasoning_delta(split: ThinkSplitter, piece: str, finish: str | None) -> tuple[str, str]:
    """One streamed piece -> (thinking, content); the last piece (`finish` set) also flushes what was held."""
    thinking, content = split.feed(piece)
    if finish is not None:
        more = split.finish()
        thinking, content = thinking + more[0], content + more[1]
    return thinking, content


def thinking_tokens(tokenizer, token_ids: list[int], thinking: str) -> int:
    """How many of a reply's tokens were thinking: up to and including the one that closes the block (all of
    them when it never closed). The first prefix whose text holds the closing tag, found by bisection."""
    from athanor.text.reasoning import END

    if not thinking or not token_ids:
        return 0

    def closed(n: int) -> bool:
        return END in tokenizer.decode(token_ids[:n], skip_special_tokens=False)

    if not closed(len(token_ids)):
        return len(token_ids)
    lo, hi = 1, len(token_ids)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if closed(mid) else (mid + 1, hi)
    return lo
