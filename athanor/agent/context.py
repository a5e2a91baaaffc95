"""The agents' honest stop when a conversation outgrows the model's context window.

For: recognising "this prompt does not fit" from any ChatModel (athanor's own ContextLengthError in-process; the
400 an OpenAI-compatible server answers, ours or vLLM's) and the one stop message both agent loops use. The agent
then ends like its max-iterations stop: the trace so far, no answer, no crash.
Not for: making room (summarising or trimming history is memory.py's job) or sizing the context (the registry's).
"""

from __future__ import annotations

import re

from athanor.errors import ContextLengthError

# our engine: "the context holds N"; vLLM: "maximum context length is N tokens"; Ollama-style: "context length of N"
_LIMIT = re.compile(r"context holds (\d+)|maximum context length is (\d+)|context length of (\d+)")


def context_limit(error: BaseException) -> int | None:
    """The context size (tokens) when `error` says the prompt no longer fits; 0 when it says so without a number;
    None for any other error."""
    text = str(getattr(error, "message", None) or error)
    m = _LIMIT.search(text)
    if m:
        return int(next(g for g in m.groups() if g))
    return 0 if isinstance(error, ContextLengthError) else None


def context_stop_message(limit: int) -> str:
    where = f"the {limit}-token context" if limit else "the model's context"
    return f"stopped: the conversation no longer fits {where}"


def is_context_stop(reason: str | None) -> bool:
    return bool(reason) and reason.startswith("stopped: the conversation no longer fits")
