"""Option names as users write them (OpenAI and Ollama requests, Modelfile PARAMETERs, `-o KEY=VALUE`) ->
the engine's token-level `SamplingParams`.

For: merging a model's default options with a request's (`params_from_options`), the aliases (`num_predict`,
`repeat_penalty`, `max_completion_tokens`), and telling engine-sizing options (`num_ctx`) from sampling ones.
The server, the CLI and in-process models (LocalChatModel) all come through here via `LLM.sampling_params`.
Not for: checking values (SamplingParams does that when built) or HTTP request shapes (serve/ schemas).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from athanor.engine.sampling_params import INTERNAL_FIELDS, SamplingParams, SamplingParamsError

# Options that size the engine rather than sample (Ollama puts both in `options`)
ENGINE_OPTIONS = ("num_ctx",)

# option name (Ollama / OpenAI spelling) -> SamplingParams field
OPTION_ALIASES = {
    "num_predict": "max_tokens",  # Ollama; negative -> None (until the context is full)
    "max_completion_tokens": "max_tokens",  # OpenAI chat's newer name
    "repeat_penalty": "repetition_penalty",  # Ollama
}


def params_from_options(defaults: dict[str, Any], overrides: dict[str, Any]) -> SamplingParams:
    """Merge a model's default options, then the request's, into checked params.

    Keys may be field names or Ollama/OpenAI spellings (OPTION_ALIASES). A None value means "not
    given" and leaves the earlier value in place. Unknown keys -> SamplingParamsError listing valid ones.
    Non-sampling Ollama options (num_ctx, num_gpu, ...) are unknown here: the caller takes them out first.
    """
    merged: dict[str, Any] = {}
    for options in (defaults, overrides):
        merged.update(_canonical_options(options))
    return SamplingParams(**merged)


def sampling_only(options: dict[str, Any]) -> dict[str, Any]:
    """The options without the engine-sizing ones."""
    return {k: v for k, v in options.items() if k not in ENGINE_OPTIONS}


def valid_option_names() -> list[str]:
    """Every key params_from_options accepts: field names and their aliases."""
    return sorted({f.name for f in fields(SamplingParams)} - INTERNAL_FIELDS | set(OPTION_ALIASES))


def _canonical_options(options: dict[str, Any]) -> dict[str, Any]:
    """One options dict -> {field name: value}, aliases resolved, None values ("not given") dropped."""
    names = {f.name for f in fields(SamplingParams)} - INTERNAL_FIELDS
    out: dict[str, Any] = {}
    for key, value in options.items():
        name = OPTION_ALIASES.get(key, key)
        if name not in names:
            raise SamplingParamsError(f"unknown sampling option {key!r}; valid: {', '.join(valid_option_names())}")
        if value is None:
            continue
        if name in out:
            raise SamplingParamsError(f"option {key!r} given twice (as {name!r} and an alias of it)")
        if key == "num_predict" and _is_int(value) and value < 0:
            value = None  # Ollama: -1 infinite, -2 fill the context; both mean "until the context is full"
        out[name] = value
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
