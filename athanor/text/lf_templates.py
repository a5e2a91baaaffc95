"""LLaMA-Factory's chat templates by name (`template: llama3`), turned into Jinja our tokenizer renders.

For: `LF_TEMPLATES` (the data, in lf_template_table.py), every name LLaMA-Factory's `src/llamafactory/data/template.py` registers, as its format
strings (prefix, system, user, assistant, observation), default system prompt, stop words and kind ("plain": system
before the first turn; "fused": system inside the first user turn, LLaMA-2 style; "reasoning": an empty thought
block is added to replies that carry none, trained when enable_thinking is on, part of the prompt when off);
`lf_jinja(name, enable_thinking)` renders such a table row as a Jinja chat template with the same output, and
`lf_stop_words(name)` gives the words that end a reply. An unknown name is "unknown template X; known: ...".

Not for: the model's own Jinja templates (tokenizer.py) or multimodal placeholders (image/video tokens are not
rendered: athanor trains text models). Tool-call formatting uses LF's plain "function" format only as the assistant
format (tool calls arrive as text, chat_format.py).
"""

from __future__ import annotations

import json

from athanor.errors import AthanorError
from athanor.text.lf_template_table import BOS, EOS, LF_TEMPLATES, LFTemplate, Slots


def get_lf_template(name: str) -> LFTemplate:
    if name not in LF_TEMPLATES:
        raise AthanorError(f"unknown template {name}; known: {', '.join(sorted(LF_TEMPLATES))}")
    return LF_TEMPLATES[name]


def lf_stop_words(name: str) -> tuple[str, ...]:
    return get_lf_template(name).stop_words


def _lit(text: str) -> str:
    return json.dumps(text)  # a Jinja string literal: Jinja unescapes \n, \" and \uXXXX like JSON writes them


def _expr(slots: Slots, value: str = "content") -> str:
    """A Jinja expression concatenating the slots, with {{content}} as `value` and {{idx}} as the turn number."""
    parts = []
    for slot in slots:
        if slot == BOS:
            parts.append("(bos_token if bos_token is defined else '')")
        elif slot == EOS:
            parts.append("(eos_token if eos_token is defined else '')")
        else:
            pieces = slot.replace("{{idx}}", "\x01idx\x01").replace("{{content}}", "\x01c\x01").split("\x01")
            for piece in pieces:
                if piece == "c":
                    parts.append(value)
                elif piece == "idx":
                    parts.append("(loop.index0 // 2) | string")
                elif piece:
                    parts.append(_lit(piece))
    return " ~ ".join(parts) if parts else "''"


def lf_jinja(name: str, enable_thinking: bool | None = None) -> str:
    """The Jinja chat template that renders messages as LLaMA-Factory's template `name` does. `enable_thinking`
    (reasoning templates only; default the template's own) decides where an empty thought block goes."""
    t = get_lf_template(name)
    thinking = t.enable_thinking if enable_thinking is None else enable_thinking
    empty_thought = _lit(t.thought_words[0] + t.thought_words[1])
    open_, close = _lit(t.thought_words[0].strip()), _lit(t.thought_words[1].strip())
    has_thought = f"({open_} in {{m}}['content'] or {close} in {{m}}['content'])"
    src = ["{{ " + _expr(t.prefix) + " }}" if t.prefix else "",
           ("{% if messages and messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}"
            "{% set loop_messages = messages[1:] %}{% else %}"
            f"{{% set system_message = {_lit(t.default_system)} %}}{{% set loop_messages = messages %}}{{% endif %}}"),
           "{% for message in loop_messages %}{% set content = message['content'] %}"]
    if t.kind == "fused":
        src.append("{% if loop.first and system_message %}{% set content = "
                   + _expr(t.system, "system_message") + " ~ content %}{% endif %}")
    else:
        src.append("{% if loop.first and system_message %}{{ " + _expr(t.system, "system_message") + " }}{% endif %}")
    src.append("{% if message['role'] == 'user' %}{{ " + _expr(t.user) + " }}")
    if t.kind == "reasoning" and not thinking:  # the empty thought closes the prompt: not trained, not generated
        nxt = has_thought.format(m="loop_messages[loop.index0 + 1]")
        src.append(f"{{% if loop.last or not {nxt} %}}{{{{ {empty_thought} }}}}{{% endif %}}")
    src.append("{% elif message['role'] == 'assistant' %}")
    if t.kind == "reasoning" and not thinking:
        src.append(f"{{% if {close} in content %}}{{% set content = content.split({_lit(t.thought_words[1])})[-1]"
                   ".lstrip('\\n') %}{% endif %}")
    elif t.kind == "reasoning":
        src.append(f"{{% if not {has_thought.format(m='message')} %}}{{% set content = {empty_thought} ~ content %}}"
                   "{% endif %}")
    assistant = t.assistant + ((EOS,) if t.efficient_eos else ())
    src.append("{{ " + _expr(assistant) + " }}")
    src.append("{% elif message['role'] in ('tool', 'observation', 'function') %}{{ "
               + _expr(t.observation or t.user) + " }}{% endif %}{% endfor %}")
    return "".join(src)
