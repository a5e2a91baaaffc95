"""ScriptedChatModel: a deterministic ChatModel that replays given replies (for edge cases a real model
cannot be made to produce on demand). It records every request so tests can check prompts and options."""

from __future__ import annotations

import time
from collections.abc import Iterator

from athanor.llm.base import ChatDelta, ChatResponse, Usage, collect


class ScriptedChatModel:
    name = "scripted"

    def __init__(self, replies: list[str | ChatResponse], *, delay_s: float = 0.0, repeat_last: bool = False) -> None:
        self.replies, self.delay_s, self.repeat_last = list(replies), delay_s, repeat_last
        self.calls: list[dict] = []  # {"messages", "tools", "options"} per request

    def chat(self, messages: list[dict], *, tools: list[dict] | None = None, **options) -> ChatResponse:
        return collect(self.stream(messages, tools=tools, **options))

    def stream(self, messages: list[dict], *, tools: list[dict] | None = None, **options) -> Iterator[ChatDelta]:
        self.calls.append({"messages": [dict(m) for m in messages], "tools": tools, "options": options})
        if not self.replies:
            raise AssertionError("ScriptedChatModel ran out of replies")
        reply = self.replies[0] if self.repeat_last and len(self.replies) == 1 else self.replies.pop(0)
        calls = reply.tool_calls if isinstance(reply, ChatResponse) else []
        text = reply.text if isinstance(reply, ChatResponse) else reply
        for i in range(0, len(text), 7):  # several deltas, like a real stream
            if self.delay_s:
                time.sleep(self.delay_s)
            yield ChatDelta(text=text[i:i + 7])
        usage = Usage(sum(len(m.get("content") or "") for m in messages), len(text))
        yield ChatDelta(tool_calls=list(calls), finish_reason="tool_calls" if calls else "stop", usage=usage)

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [[float(len(t))] for t in texts]
