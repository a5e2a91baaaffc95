"""`suffix` (fill-in-the-middle) on /v1/completions and /api/generate: one prompt layout for both APIs.

A model trained for FIM has three special tokens; the prompt is laid out prefix-suffix-middle (PSM), as
StarCoder, SmolLM's code models and Qwen2.5-Coder were trained: `<fim_prefix>{prompt}<fim_suffix>{suffix}<fim_middle>`,
and the model writes the middle. A model without those tokens is refused with a one-line 400 (never a prompt it
was not trained on). Not for Go templates that render `.Suffix` themselves (Ollama's own mechanism).
"""

from __future__ import annotations

from athanor.serve.errors import ServeError

# (prefix, suffix, middle) token spellings, tried in order
FIM_TOKENS = (("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"), ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"))


def fim_token_ids(tokenizer) -> tuple[int, int, int] | None:
    """The ids of the model's FIM tokens, or None when it has none."""
    for names in FIM_TOKENS:
        ids = [tokenizer.token_to_id(n) for n in names]
        if all(i is not None for i in ids):
            return ids[0], ids[1], ids[2]
    return None


def fim_prompt(tokenizer, prompt: str, suffix: str, model_name: str) -> list[int]:
    ids = fim_token_ids(tokenizer)
    if ids is None:
        raise ServeError(f"suffix (fill-in-the-middle) needs a model with FIM tokens ({FIM_TOKENS[0][0]}, "
                         f"{FIM_TOKENS[1][0]}, ...); {model_name} has none", 400, "suffix")
    pre, suf, mid = ids
    return ([pre] + tokenizer.encode(prompt, add_special_tokens=False) + [suf]
            + tokenizer.encode(suffix, add_special_tokens=False) + [mid])
