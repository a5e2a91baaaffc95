"""SamplingParams: how one request wants its next tokens chosen, checked when built.

For: the per-request knobs the sampler (engine/sampler.py) and the engine's stop logic read, in token terms.
Not for: option names of APIs and Modelfiles (num_predict, repeat_penalty, ...: runtime/options.py maps them here),
text-level stop strings (carried here, matched by the text layer), chat templates, or engine sizing (config.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from athanor.errors import AthanorError

MAX_LOGPROBS = 20  # OpenAI's top_logprobs limit; also bounds the top-k gather in the sampler
GREEDY_EPS = 1e-5  # temperatures below this are greedy: dividing logits by ~0 overflows to inf/NaN
MAX_ABS_LOGIT_BIAS = 100.0  # OpenAI's range for logit_bias values
MAX_ABS_PENALTY = 2.0  # OpenAI's range for presence/frequency penalties


class SamplingParamsError(AthanorError, ValueError):
    """A bad sampling option. A ValueError for callers that catch that; an AthanorError for the CLI/server."""


@dataclass
class SamplingParams:
    """Per-request sampling options. Every field is checked in __post_init__ (bad value -> SamplingParamsError)."""

    max_tokens: int | None = None  # None -> until the context is full (the engine decides)
    temperature: float = 1.0  # < GREEDY_EPS (e.g. 0) -> greedy
    top_k: int = 0  # 0 or -1 -> off (-1 is stored as 0)
    top_p: float = 1.0  # in (0, 1]; 1 -> off
    min_p: float = 0.0  # in [0, 1]; drop tokens with prob < min_p * max prob; 0 -> off
    repetition_penalty: float = 1.0  # HF/vLLM: over prompt+output tokens; logit > 0 -> /p, else *p; 1 -> off
    presence_penalty: float = 0.0  # OpenAI, over OUTPUT tokens: logit -= p if count > 0
    frequency_penalty: float = 0.0  # OpenAI, over OUTPUT tokens: logit -= f * count
    repeat_last_n: int = -1  # window for repetition_penalty: -1 all tokens, 0 off, n the last n (Ollama)
    seed: int | None = None  # per-request generator: same seed -> same tokens, whatever the batch
    stop: list[str] = field(default_factory=list)  # stop strings, matched by the text layer (a str -> [str])
    stop_token_ids: list[int] = field(default_factory=list)  # extra stop ids, merged with eos by the engine
    ignore_eos: bool = False  # eos never stops the sequence (the engine's job)
    min_tokens: int = 0  # eos and stop ids are masked until this many tokens are out
    logprobs: int | None = None  # None off; 0 -> logprob of the chosen token; k -> also top-k (k <= 20)
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit (-100..100)
    # a compiled grammar (athanor.text.grammar.Guide): each sequence walks its own matcher and samples only the
    # tokens it allows. Set by code (response_format, tool_choice), never from a user's options dict.
    guide: Any = None

    def __post_init__(self) -> None:
        self._normalize()
        for f in fields(self):
            _CHECKS[f.name](f.name, getattr(self, f.name))
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise SamplingParamsError(f"min_tokens ({self.min_tokens}) must be <= max_tokens ({self.max_tokens})")

    def _normalize(self) -> None:
        """Accept the common loose spellings (top_k=-1, stop="\\n", JSON string keys in logit_bias)."""
        if self.top_k == -1:
            self.top_k = 0
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if isinstance(self.logit_bias, dict):
            # JSON objects have string keys: {"50256": -100} arrives as str -> int here
            self.logit_bias = {_token_key(k): v for k, v in self.logit_bias.items()}

    @property
    def is_greedy(self) -> bool:
        """True when the next token is the argmax of the (penalised) logits."""
        return self.temperature < GREEDY_EPS

    def validate_for_vocab(self, vocab_size: int) -> None:
        """Token ids must exist in the model's vocabulary; the engine calls this when it admits a request."""
        for name, ids in (("logit_bias", self.logit_bias or {}), ("stop_token_ids", self.stop_token_ids)):
            bad = [i for i in ids if i >= vocab_size]
            if bad:
                raise SamplingParamsError(f"{name} has token ids >= vocab size {vocab_size}: {bad[:5]}")


INTERNAL_FIELDS = {"guide"}  # fields set by code, never options a user can name


def _token_key(key: Any) -> Any:
    """'50256' -> 50256; anything else unchanged (checked later)."""
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        return int(key)
    return key


# ---- per-field checks: each raises SamplingParamsError with "<name> must be ..., got <value>" ----


def _fail(name: str, rule: str, value: Any) -> None:
    raise SamplingParamsError(f"{name} must be {rule}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_Check = Callable[[str, Any], None]  # (field name, value) -> None, or raises SamplingParamsError


def _int_at_least(low: int, allow_none: bool = False) -> _Check:
    def check(name: str, value: Any) -> None:
        if value is None and allow_none:
            return
        if not _is_int(value) or value < low:
            _fail(name, f"an integer >= {low}" + (" or null" if allow_none else ""), value)

    return check


def _number_in(low: float, high: float, low_open: bool = False) -> _Check:
    def check(name: str, value: Any) -> None:
        ok = _is_number(value) and (value > low if low_open else value >= low) and value <= high
        if not ok:
            bounds = f"> {low:g}" if low_open else f">= {low:g}"
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
            rule = f"a number {bounds}" if high == math.inf else f"a number in {interval}"
            _fail(name, rule, value)

    return check


def _check_seed(name: str, value: Any) -> None:
    # torch.Generator.manual_seed accepts [-2**63, 2**64)
    if value is not None and (not _is_int(value) or not -(2**63) <= value < 2**64):
        _fail(name, "an integer in [-2**63, 2**64) or null", value)


def _check_stop(name: str, value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        _fail(name, "a list of non-empty strings", value)


def _check_stop_token_ids(name: str, value: Any) -> None:
    if not isinstance(value, list) or not all(_is_int(i) and i >= 0 for i in value):
        _fail(name, "a list of token ids (integers >= 0)", value)


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        _fail(name, "true or false", value)


def _check_logprobs(name: str, value: Any) -> None:
    if value is not None and (not _is_int(value) or not 0 <= value <= MAX_LOGPROBS):
        _fail(name, f"an integer in [0, {MAX_LOGPROBS}] or null", value)


def _check_logit_bias(name: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or not all(_is_int(k) and k >= 0 for k in value):
        _fail(name, "a map of token id (integer >= 0) to bias", value)
    bad = {k: v for k, v in value.items() if not _is_number(v) or abs(v) > MAX_ABS_LOGIT_BIAS}
    if bad:
        _fail(name, f"a map with biases in [-{MAX_ABS_LOGIT_BIAS:g}, {MAX_ABS_LOGIT_BIAS:g}]", bad)


def _check_guide(name: str, value: Any) -> None:
    if value is not None and not callable(getattr(value, "matcher", None)):
        _fail(name, "a compiled grammar (athanor.text.grammar.Guide) or None", value)


def _check_top_k(name: str, value: Any) -> None:
    if not _is_int(value) or value < 0:  # -1 was turned into 0 by _normalize
        _fail(name, "an integer >= 1, or 0 / -1 for off", value)


_CHECKS: dict[str, _Check] = {
    "max_tokens": _int_at_least(1, allow_none=True),
    "temperature": _number_in(0.0, math.inf),
    "top_k": _check_top_k,
    "top_p": _number_in(0.0, 1.0, low_open=True),
    "min_p": _number_in(0.0, 1.0),
    "repetition_penalty": _number_in(0.0, math.inf, low_open=True),
    "presence_penalty": _number_in(-MAX_ABS_PENALTY, MAX_ABS_PENALTY),
    "frequency_penalty": _number_in(-MAX_ABS_PENALTY, MAX_ABS_PENALTY),
    "repeat_last_n": _int_at_least(-1),
    "seed": _check_seed,
    "stop": _check_stop,
    "stop_token_ids": _check_stop_token_ids,
    "ignore_eos": _check_bool,
    "min_tokens": _int_at_least(0),
    "logprobs": _check_logprobs,
    "logit_bias": _check_logit_bias,
    "guide": _check_guide,
}
