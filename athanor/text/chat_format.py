"""Conversations with tools, spelled out for chat templates that cannot render tools or tool calls themselves.

One format for training (train/encode.py), the server (serve/tool_calls.py) and the in-process model (llm/local.py):
tools listed as JSON in the system message, past calls written as Hermes `<tool_call>` blocks, which
tool_parsing.py reads back. Templates that know `tools` / `tool_calls` (Qwen2.5, Llama 3.x) are left alone.
Not for rendering templates (tokenizer.py) or parsing model output (text/tool_parsing.py).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from athanor.text.gotemplate import is_go_template
from athanor.text.gotemplate import parse as parse_go

if TYPE_CHECKING:
    from athanor.text.tokenizer import Tokenizer


def adapt_to_template(tokenizer: Tokenizer, messages: list[dict], tools: list[dict] | None = None,
                      chat_template: str | None = None) -> tuple[list[dict], list[dict] | None]:
    """(messages, tools) ready for the template: tools and calls as text where the template lacks them."""
    source = _template_source(tokenizer, chat_template)
    if is_go_template(source):  # an Ollama template: it knows tools/calls when it mentions .Tools/.ToolCalls
        names = parse_go(source).vars
        source = " ".join(n for n, k in (("tools", "tools"), ("tool_calls", "toolcalls")) if k in names)
    if tools and "tools" not in source:
        listing = "You can call these functions:\n" + "\n".join(json.dumps(t.get("function", t)) for t in tools)
        if messages and messages[0]["role"] == "system":
            messages = [{**messages[0], "content": messages[0]["content"] + "\n\n" + listing}, *messages[1:]]
        else:
            messages = [{"role": "system", "content": listing}, *messages]
    if "tool_calls" not in source:
        messages = [_calls_as_text(m) if m.get("tool_calls") else m for m in messages]
    # templates index m['content'] and concatenate it: never hand them None
    return [m if m.get("content") is not None else {**m, "content": ""} for m in messages], tools


def _template_source(tokenizer: Tokenizer, chat_template: str | None) -> str:
    if chat_template == "chatml":
        from athanor.text.tokenizer import CHATML_TEMPLATE

        return CHATML_TEMPLATE
    if chat_template is not None:
        return tokenizer.named_chat_templates.get(chat_template, chat_template)
    return tokenizer.chat_template or ""


def _calls_as_text(message: dict) -> dict:
    blocks = []
    for c in message["tool_calls"]:
        args = c["function"]["arguments"]
        if isinstance(args, str):  # OpenAI sends arguments as JSON text; render the object, as training data does
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                pass  # not JSON: kept as the model wrote it
        blocks.append(f"<tool_call>\n{json.dumps({'name': c['function']['name'], 'arguments': args})}\n</tool_call>")
    text = "\n".join(([message["content"]] if message.get("content") else []) + blocks)
    return {k: v for k, v in message.items() if k != "tool_calls"} | {"content": text}
