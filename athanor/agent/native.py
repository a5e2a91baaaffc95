"""ToolCallingAgent: the agent that uses the model's own tool-call format through the protocol's `tools` field.

The path OpenAI-style models take: the tools go as JSON schemas, the model answers with `tool_calls`, every call
is run (several at once, in threads, when the model makes parallel calls) and its result goes back as a
`{"role": "tool", "tool_call_id": ...}` message. Events and the honest ending (answer / "stopped after N
steps" / wall-time) are the same as the ReAct agent's. It needs a model that returns parsed tool calls:
`openai_compat` against a server that parses them; `local` does not parse them yet (see llm/local.py).
Not for: text-protocol models (react.py).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from athanor.agent.context import context_limit, context_stop_message
from athanor.agent.react import MAX_OBSERVATION_CHARS, AgentEvent, AgentResult, remember, result_from_events
from athanor.agent.spans import AgentRun, tool_outcome, tool_span, traced_run
from athanor.agent.tools import Tool, ToolError, openai_tool_spec
from athanor.llm.base import ChatModel, ChatResponse, ToolCall, collect, tool_call_message

DEFAULT_SYSTEM = "You are a helpful assistant. Use the tools when they help; answer in plain text when done."


class ToolCallingAgent:
    def __init__(self, model: ChatModel, tools: list[Tool], *, memory=None, max_iterations: int = 10,
                 max_seconds: float = 300.0, system: str | None = DEFAULT_SYSTEM, options: dict | None = None,
                 max_parallel: int = 8, name: str = "tool_calling") -> None:
        if max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
        names = [t.name for t in tools]
        if len(set(names)) != len(names):
            raise ValueError(f"tool names must be unique, got {names}")
        self.model, self.tools, self.memory, self.system = model, {t.name: t for t in tools}, memory, system
        self.name = name
        self.max_iterations, self.max_seconds, self.max_parallel = max_iterations, max_seconds, max_parallel
        self.options = {"temperature": 0.0} | (options or {})

    def run(self, question: str) -> AgentResult:
        return result_from_events(list(self.stream(question)))

    def stream(self, question: str) -> Iterator[AgentEvent]:
        """The loop's events; the run is traced as an agent span with a chain span per step (spans.py)."""
        with traced_run(self.name, getattr(self.model, "name", None), question) as run:
            yield from self._loop(question, run)

    def _loop(self, question: str, run: AgentRun) -> Iterator[AgentEvent]:
        """1. ask the model with the tools, 2. answer if it made no calls, 3. run the calls, 4. send results back."""
        history = self.memory.messages() if self.memory is not None else []
        head = [{"role": "system", "content": self.system}] if self.system else []
        messages = [*head, *history, {"role": "user", "content": question}]
        specs = [openai_tool_spec(t) for t in self.tools.values()]
        deadline = time.monotonic() + self.max_seconds
        final = AgentEvent("stopped", f"stopped after {self.max_iterations} steps", self.max_iterations)
        for step in range(1, self.max_iterations + 1):
            run.step(step)
            try:
                with run.asking():
                    response = self._ask(messages, specs, deadline)  # 1.
            except Exception as e:  # only "no longer fits the context" is a stop; anything else is re-raised
                if (limit := context_limit(e)) is None:
                    raise
                final = AgentEvent("stopped", context_stop_message(limit), step)
                break
            if response is None:
                final = AgentEvent("stopped", f"stopped: wall-time limit of {self.max_seconds:g} s reached", step)
                break
            if not response.tool_calls:  # 2.
                if response.text.strip():
                    final = AgentEvent("answer", response.text.strip(), step)
                    break
                yield AgentEvent("error", "the model returned neither text nor tool calls", step)
                messages.append({"role": "user", "content": "Your reply was empty. Answer, or call a tool."})
                continue
            if response.text.strip():
                yield AgentEvent("thought", response.text.strip(), step)
            messages.append(tool_call_message(response.text, response.tool_calls))
            for call in response.tool_calls:  # 3.
                yield AgentEvent("tool_call", call.arguments, step, tool=call.name, arguments=_loads_or_none(call.arguments))
            for call, (kind, content) in zip(response.tool_calls, self._run_calls(response.tool_calls, run.current)):  # 4.
                yield AgentEvent(kind, content, step, tool=call.name)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
            if time.monotonic() > deadline:
                final = AgentEvent("stopped", f"stopped: wall-time limit of {self.max_seconds:g} s reached", step)
                break
        remember(self.memory, question, final)
        run.finish(final.kind, final.text, final.step)
        yield final

    def _ask(self, messages: list[dict], specs: list[dict], deadline: float) -> ChatResponse | None:
        if time.monotonic() > deadline:
            return None
        deltas = []
        with contextlib.closing(self.model.stream(messages, tools=specs or None, **self.options)) as stream:
            for delta in stream:
                deltas.append(delta)
                if time.monotonic() > deadline:
                    return None
        return collect(iter(deltas))

    def _run_calls(self, calls: list[ToolCall], step) -> list[tuple[str, str]]:
        """[(event kind, content)] in call order; parallel calls run in threads, each a `tool` span of `step`."""
        if len(calls) == 1:
            return [self._traced_call(calls[0], step)]
        with ThreadPoolExecutor(max_workers=min(self.max_parallel, len(calls))) as pool:
            return list(pool.map(lambda c: self._traced_call(c, step), calls))

    def _traced_call(self, call: ToolCall, step) -> tuple[str, str]:
        with tool_span(step, call.name, call.arguments, call.id) as span:
            kind, content = self._run_one(call)
            tool_outcome(span, kind, content)
        return kind, content

    def _run_one(self, call: ToolCall) -> tuple[str, str]:
        tool = self.tools.get(call.name)
        if tool is None:
            return "error", f"'{call.name}' is not a valid tool. Valid tool names: {', '.join(self.tools) or 'none'}."
        try:
            arguments = json.loads(call.arguments or "{}")
        except json.JSONDecodeError as e:
            return "error", f"arguments for {call.name} are not valid JSON ({e.msg}): {call.arguments!r}"
        try:
            result = tool.call(arguments)
        except ToolError as e:
            return "error", f"{call.name}: {e}"
        except Exception as e:  # noqa: BLE001 - any tool failure is for the model to read, not a crash
            return "error", f"{call.name} failed: {e}"
        if len(result) > MAX_OBSERVATION_CHARS:
            result = result[:MAX_OBSERVATION_CHARS] + "\n... (truncated)"
        return "tool_result", result


def _loads_or_none(text: str) -> dict | None:
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
