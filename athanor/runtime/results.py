"""The one family of generation results above the token engine: per-step, streamed and finished.

`RequestDelta` is what one engine step gives one request (AsyncEngine); `Delta` is a streamed piece of text for a
sync caller (LLM.stream, ModelHandle.stream), the last one carrying the `Completion`; `Completion` is the finished
request (serve/'s per-choice result too). The ChatModel protocol's `ChatDelta` / `ChatResponse` (llm/base.py) are
these, as apps see them (tool calls parsed, usage counted). The engine's own `StepOutput` stays in token terms.
Not for: HTTP response shapes (serve/).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RequestDelta:
    """What one engine step gives one request: new text and tokens; finish_reason and counts on the last."""

    request_id: str
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list = field(default_factory=list)
    finish_reason: str | None = None  # set on the last delta: stop | length | abort
    num_prompt_tokens: int = 0
    num_output_tokens: int = 0
    num_cached_tokens: int = 0


@dataclass
class Completion:
    """A finished (or aborted) request: everything a non-streamed answer needs."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # stop | length | abort (None while still running)
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    logprobs: list = field(default_factory=list)
    prompt_seconds: float = 0.0  # request start -> first token (prefill)
    decode_seconds: float = 0.0  # first token -> last token
    num_output_tokens: int = 0  # 0 at construction -> len(token_ids)

    def __post_init__(self) -> None:
        self.num_output_tokens = self.num_output_tokens or len(self.token_ids)


@dataclass
class Delta:
    """One streamed piece of a request: new text (maybe empty) and, on the last one, the finished Completion."""

    text: str
    completion: Completion | None = None
