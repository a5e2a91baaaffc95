"""A forgiving parser for ReAct replies in the conversational format.

Expected (case, bold markers, extra spaces and ``` fences tolerated)::

    Thought: Do I need to use a tool? Yes
    Action: calculator
    Action Input: {"expression": "17*23"}      (JSON, or plain text for a one-argument tool)

    Thought: Do I need to use a tool? No
    AI: 391

Also accepted: "Final Answer:" for "AI:", a bracketed/quoted/backticked tool name, and a JSON object
{"action": ..., "action_input": ...}. Anything the model writes after its first "Observation:" is dropped
(a model that invents its own observations). Not for: running tools or building prompts (react.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass


@dataclass
class Action:
    tool: str
    tool_input: str
    thought: str = ""


@dataclass
class Final:
    answer: str
    thought: str = ""


@dataclass
class ParseError:
    message: str  # for the model's next Observation
    thought: str = ""


_LABEL = r"^[ \t>*_#-]*{name}[ \t*_]*:[ \t*_]*"
_THOUGHT = re.compile(_LABEL.format(name="thought"), re.IGNORECASE | re.MULTILINE)
_ACTION = re.compile(_LABEL.format(name=r"action(?![ \t]*input)"), re.IGNORECASE | re.MULTILINE)
_INPUT = re.compile(_LABEL.format(name=r"action[ \t_]*input"), re.IGNORECASE | re.MULTILINE)
_FINAL = re.compile(_LABEL.format(name=r"(?:ai|final[ \t]*answer)"), re.IGNORECASE | re.MULTILINE)
_OBSERVATION = re.compile(_LABEL.format(name="observation"), re.IGNORECASE | re.MULTILINE)
_NEXT_LABEL = re.compile(r"^[ \t>*_#-]*(?:thought|action|observation|ai|final[ \t]*answer)[ \t*_]*:", re.IGNORECASE | re.MULTILINE)
_NO_TOOL = re.compile(r"need to use a tool\?[ \t*_]*no\b", re.IGNORECASE)


def format_help(tool: str = "<tool name>", tool_input: str = "<input>") -> str:
    """The expected format, with a concrete tool when given (small models copy placeholders literally)."""
    return (f"Use exactly this format:\nThought: Do I need to use a tool? Yes\nAction: {tool}\n"
            f"Action Input: {tool_input}\nor, to answer:\nThought: Do I need to use a tool? No\nAI: <your answer>")


FORMAT_HELP = format_help()


def parse_react(text: str, help_text: str = FORMAT_HELP) -> Action | Final | ParseError:
    """A reply -> Action / Final / ParseError; `help_text` ends every ParseError message."""
    text = _strip_fences(_cut_at_observation(text)).strip()
    thought = _section(text, _THOUGHT) or ""
    as_json = _json_action(text)
    if as_json:
        return as_json
    action, final = _ACTION.search(text), _FINAL.search(text)
    if action and (not final or action.start() < final.start()):
        return _action(text, action, thought, help_text)
    if final:
        answer = text[final.end():].strip()
        if answer:
            return Final(answer, thought)
        return ParseError("'AI:' was empty. Write your answer after 'AI:'.\n" + help_text, thought)
    if thought and _NO_TOOL.search(thought):
        rest = _NO_TOOL.split(thought, maxsplit=1)[1].strip()
        if rest:  # "Thought: Do I need to use a tool? No\nThe answer is 391" -> the answer
            return Final(rest, thought[: len(thought) - len(rest)].strip())
    if not text:
        return ParseError("Your reply was empty.\n" + help_text)
    return ParseError("Could not find 'Action:' or 'AI:' in your reply.\n" + help_text, thought)


def _action(text: str, match: re.Match, thought: str, help_text: str) -> Action | ParseError:
    line = text[match.end():].split("\n", 1)[0]
    tool = line.strip().strip("`'\"[]*. ").strip()
    if not tool or tool.lower() in ("none", "n/a", "no"):
        return ParseError("No tool was named after 'Action:'. To answer without a tool write 'AI: <answer>'.\n"
                          + help_text, thought)
    tool_input = _section(text, _INPUT)
    if tool_input is None:
        # "Action: calculator(17*23)" or "Action: calculator 17*23": input on the same line
        m = re.match(r"([\w.-]+)\s*(?:\((.*)\)|\s+(.+))$", tool)
        if not m:
            return ParseError(f"'Action: {tool}' had no 'Action Input:' line.\n" + help_text, thought)
        tool, tool_input = m.group(1), (m.group(2) if m.group(2) is not None else m.group(3))
    return Action(tool, _strip_fences(tool_input).strip(), thought)


def _section(text: str, label: re.Pattern) -> str | None:
    """Text after `label` up to the next label line (or the end)."""
    m = label.search(text)
    if not m:
        return None
    rest = text[m.end():]
    nxt = _NEXT_LABEL.search(rest, 1)  # a label at the very start of `rest` would be this label's own value
    return (rest[:nxt.start()] if nxt else rest).strip()


def _json_action(text: str) -> Action | Final | None:
    """{"action": "calculator", "action_input": "17*23"} as the whole reply (LangChain's JSON agents)."""
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or "action" not in obj:
        return None
    tool_input = obj.get("action_input", obj.get("input", ""))
    tool_input = tool_input if isinstance(tool_input, str) else json.dumps(tool_input)
    if str(obj["action"]).lower() in ("final answer", "final_answer", "ai"):
        return Final(tool_input)
    return Action(str(obj["action"]), tool_input)


def _cut_at_observation(text: str) -> str:
    m = _OBSERVATION.search(text)
    return text[:m.start()] if m else text


def _strip_fences(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.strip().startswith("```"))
