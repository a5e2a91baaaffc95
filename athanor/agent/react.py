"""ReActAgent: the conversational ReAct loop (Thought / Action / Action Input / Observation ... AI:) over any ChatModel.

The prompt is a system message with the tool list and the format, then the conversation history from memory,
then the new input; each step appends the model's reply (an assistant message) and its Observation (a user
message), so chat-tuned models see an ordinary dialogue. Every step streams `AgentEvent`s. The loop ends
with an answer, or honestly: "stopped after N steps" (max_iterations), "stopped: wall-time limit" or "stopped:
the conversation no longer fits the N-token context" (context.py) - a stopped run never has an `answer`. The wall time is checked before each model call, between streamed pieces
(an abandoned stream is closed, which frees the engine's request) and after each tool; a running tool is
bounded by its own limit (the python sandbox's timeout), not interrupted.
Not for: the model's native tool-call format (native.py), running tools safely (the tools do that).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from athanor.agent.context import context_limit, context_stop_message
from athanor.agent.react_parser import Action, Final, format_help, parse_react
from athanor.agent.spans import AgentRun, refused_tool, tool_outcome, tool_span, traced_run
from athanor.agent.tools import Tool, ToolError, arguments_from_text, example_arguments
from athanor.llm.base import ChatModel

EventKind = Literal["thought", "tool_call", "tool_result", "answer", "error", "stopped"]
MAX_OBSERVATION_CHARS = 4000

SYSTEM_TEMPLATE = """{prefix}

TOOLS:
------
You have access to the following tools:

{tool_lines}

To use a tool, use the following format:

Thought: Do I need to use a tool? Yes
Action: the action to take, should be one of [{tool_names}]
Action Input: the input to the action
Observation: the result of the action

When you have a response to say to the Human, or if you do not need to use a tool, you MUST use the format:

Thought: Do I need to use a tool? No
AI: [your response here]

Begin!"""
DEFAULT_PREFIX = "You are a helpful assistant. You answer questions, using tools when they help."


@dataclass
class AgentEvent:
    kind: EventKind
    text: str = ""
    step: int = 0
    tool: str | None = None
    arguments: dict | None = None


@dataclass
class AgentResult:
    answer: str | None  # None when the agent stopped without one
    stopped_reason: str | None  # "stopped after N steps" / "stopped: wall-time limit ..." / None
    steps: int
    events: list[AgentEvent] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.answer if self.answer is not None else f"Agent {self.stopped_reason} without an answer."


class ReActAgent:
    def __init__(self, model: ChatModel, tools: list[Tool], *, memory=None, max_iterations: int = 10,
                 max_seconds: float = 300.0, prefix: str = DEFAULT_PREFIX, options: dict | None = None,
                 name: str = "react") -> None:
        if max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
        names = [t.name for t in tools]
        if len(set(names)) != len(names):
            raise ValueError(f"tool names must be unique, got {names}")
        self.model, self.tools, self.memory, self.name = model, {t.name: t for t in tools}, memory, name
        self.max_iterations, self.max_seconds, self.prefix = max_iterations, max_seconds, prefix
        # Stop before the model writes its own Observation; greedy by default so runs repeat.
        self.options = {"stop": ["\nObservation:", "Observation:"], "temperature": 0.0, "max_tokens": 256} | (options or {})

    def system_prompt(self) -> str:
        lines = "\n".join(f"> {t.name}: {t.description} Input: {example_arguments(t)}" for t in self.tools.values())
        return SYSTEM_TEMPLATE.format(prefix=self.prefix, tool_lines=lines or "(none)",
                                      tool_names=", ".join(self.tools))

    def format_help(self) -> str:
        """The format reminder sent after a mistake, naming a real tool and its input."""
        first = next(iter(self.tools.values()), None)
        return format_help(first.name, example_arguments(first)) if first else format_help()

    def run(self, question: str) -> AgentResult:
        return result_from_events(list(self.stream(question)))

    def stream(self, question: str) -> Iterator[AgentEvent]:
        """The loop's events; the run is traced as an agent span with a chain span per step (spans.py)."""
        with traced_run(self.name, getattr(self.model, "name", None), question) as run:
            yield from self._loop(question, run)

    def _loop(self, question: str, run: AgentRun) -> Iterator[AgentEvent]:
        """The loop: 1. ask the model, 2. parse, 3. run the tool or finish, 4. append the Observation."""
        history = self.memory.messages() if self.memory is not None else []
        messages = [{"role": "system", "content": self.system_prompt()}, *history, {"role": "user", "content": question}]
        deadline = time.monotonic() + self.max_seconds
        final: AgentEvent | None = None
        for step in range(1, self.max_iterations + 1):
            run.step(step)
            # 1. ask the model
            try:
                with run.asking():
                    reply = self._ask(messages, deadline)
            except Exception as e:  # only "no longer fits the context" is a stop; anything else is re-raised
                if (limit := context_limit(e)) is None:
                    raise
                final = AgentEvent("stopped", context_stop_message(limit), step)
                break
            if reply is None:
                final = AgentEvent("stopped", f"stopped: wall-time limit of {self.max_seconds:g} s reached", step)
                break
            # 2. parse
            parsed = parse_react(reply, self.format_help())
            if parsed.thought:
                yield AgentEvent("thought", parsed.thought, step)
            if isinstance(parsed, Final):
                final = AgentEvent("answer", parsed.answer, step)
                break
            # 3. run the tool (or explain what was wrong)
            if isinstance(parsed, Action):
                observation = yield from self._act(parsed, step, run.current)
            else:
                observation = parsed.message
                yield AgentEvent("error", observation, step)
            # 4. the Observation goes back as the next user turn
            messages += [{"role": "assistant", "content": reply.strip()},
                         {"role": "user", "content": f"Observation: {observation}"}]
            if time.monotonic() > deadline:
                final = AgentEvent("stopped", f"stopped: wall-time limit of {self.max_seconds:g} s reached", step)
                break
        else:
            final = AgentEvent("stopped", f"stopped after {self.max_iterations} steps", self.max_iterations)
        self._remember(question, final)
        run.finish(final.kind, final.text, final.step)
        yield final

    def _ask(self, messages: list[dict], deadline: float) -> str | None:
        """The model's reply, or None when the wall-time limit passes (checked between streamed pieces)."""
        if time.monotonic() > deadline:
            return None
        parts = []
        with contextlib.closing(self.model.stream(messages, **self.options)) as deltas:
            for delta in deltas:
                parts.append(delta.text)
                if time.monotonic() > deadline:
                    return None
        return "".join(parts)

    def _act(self, action: Action, step: int, span=None):
        """Run the action's tool (a `tool` span under the step `span`); yields its events, returns the Observation."""
        tool = self._find_tool(action.tool)
        if tool is None:
            msg = (f"'{action.tool}' is not a valid tool. Valid tool names: {', '.join(self.tools) or 'none'}.\n"
                   + self.format_help())
            refused_tool(span, action.tool, action.tool_input, msg)
            yield AgentEvent("error", msg, step, tool=action.tool)
            return msg
        try:
            arguments = arguments_from_text(tool, action.tool_input)
        except ToolError as e:
            refused_tool(span, tool.name, action.tool_input, str(e))
            yield AgentEvent("error", str(e), step, tool=tool.name)
            return f"{e}\n{self.format_help()}"
        yield AgentEvent("tool_call", json.dumps(arguments), step, tool=tool.name, arguments=arguments)
        kind, text = self._call_tool(tool, arguments, span)
        yield AgentEvent(kind, text, step, tool=tool.name, arguments=arguments)
        return text

    def _call_tool(self, tool: Tool, arguments: dict, span) -> tuple[str, str]:
        """(event kind, text): the result, cut to MAX_OBSERVATION_CHARS, or the failure the model reads."""
        with tool_span(span, tool.name, arguments) as s:
            try:
                result = tool.call(arguments)
            except Exception as e:  # noqa: BLE001 - any tool failure is for the model to read, not a crash
                kind, result = "error", f"{tool.name} failed: {e}"
            else:
                kind = "tool_result"
                if len(result) > MAX_OBSERVATION_CHARS:
                    result = result[:MAX_OBSERVATION_CHARS] + "\n... (truncated)"
            tool_outcome(s, kind, result)
        return kind, result

    def _find_tool(self, name: str) -> Tool | None:
        if name in self.tools:
            return self.tools[name]
        by_lower = {k.lower(): t for k, t in self.tools.items()}
        return by_lower.get(name.lower().replace(" ", "_"))

    def _remember(self, question: str, final: AgentEvent) -> None:
        remember(self.memory, question, final)


def remember(memory, question: str, final: AgentEvent) -> None:
    """Store the turn: the question, and the answer or an explicit no-answer note (never a fake answer)."""
    if memory is None:
        return
    memory.add({"role": "user", "content": question})
    text = final.text if final.kind == "answer" else f"(no answer: {final.text})"
    memory.add({"role": "assistant", "content": text})


def result_from_events(events: list[AgentEvent]) -> AgentResult:
    last = events[-1]
    answer = last.text if last.kind == "answer" else None
    stopped = last.text if last.kind == "stopped" else None
    return AgentResult(answer, stopped, last.step, events)
