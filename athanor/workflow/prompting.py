"""Prompt building and model calls shared by the workflow's model nodes (llm, classifier, extractor, agent).

What Dify's LLM node does to a prompt, in the same order: the template's messages (`{{#node.var#}}` references
rendered from the pool, `{{#context#}}` replaced by the context text, or Jinja2 for `edition_type: jinja2`),
then the conversation history when `memory` is set, then the query (`memory.query_prompt_template`, else
`sys.query`) as the last user turn. Completion-mode templates become one user message, with `#histories#` and
`#sys.query#` filled in. Also: completion_params -> our sampling options, one streamed model call, lenient
JSON extraction and JSON-schema checks for structured output.
Not for: the nodes themselves (nodes/model.py ...) or how a model is found (services.py).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from typing import Any

from athanor.errors import AthanorError
from athanor.llm.base import ChatModel, ChatResponse, Usage, collect
from athanor.workflow.nodes.base import RunContext, WorkflowNodeError

CONTEXT_REF = "{{#context#}}"
MAX_HISTORY_TURNS = 500  # Dify's default message limit when the window is off
# Dify completion_params that mean the same to our models; the rest (response_format, ...) are dropped.
_OPTIONS = ("temperature", "top_p", "top_k", "max_tokens", "stop", "seed", "presence_penalty",
            "frequency_penalty", "repetition_penalty")


def model_options(model: dict) -> dict:
    """A DSL model mapping's completion_params -> sampling options for ChatModel.stream."""
    params = (model or {}).get("completion_params") or {}
    out = {k: params[k] for k in _OPTIONS if params.get(k) is not None}
    if isinstance(out.get("stop"), list) and not out["stop"]:
        del out["stop"]
    return out


# --------------------------------------------------------------------------------------------- rendering


def render(ctx: RunContext, text: str, context: str | None = None) -> str:
    """Pool references rendered; `{{#context#}}` replaced after, so context text is never re-rendered.

    A reference to a node variable that does not exist fails the node, as in Dify's llm node (the pool alone
    renders it as ""); `sys.*` references may be absent (a workflow app has no sys.query).
    """
    from athanor.workflow.pool import TEMPLATE_REF

    for match in TEMPLATE_REF.finditer(text or ""):
        selector = match.group(1).split(".")
        if selector[0] != "sys" and not ctx.pool.has(selector):
            raise WorkflowNodeError(f"variable #{match.group(1)}# is not defined")
    parts = (text or "").split(CONTEXT_REF)
    rendered = [ctx.render(p) if "{{#" in p else p for p in parts]
    return (context or "").join(rendered)


def render_jinja(ctx: RunContext, template: str, data: dict) -> str:
    """A jinja2-edition prompt: variables from `prompt_config.jinja2_variables`, rendered in a sandbox."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    variables = {}
    for item in (data.get("prompt_config") or {}).get("jinja2_variables") or []:
        variables[item.get("variable")] = ctx.pool.get(list(item.get("value_selector") or []))
    try:
        return ImmutableSandboxedEnvironment().from_string(template or "").render(**variables)
    except TemplateError as e:
        raise WorkflowNodeError(f"jinja2 prompt: {e}") from None


def context_text(ctx: RunContext, data: dict) -> str | None:
    """The text for `{{#context#}}`: a string variable as is; a list (knowledge results) joined by content.

    Without a context (disabled, or its variable unset on this path) `{{#context#}}` renders as "".
    """
    cfg = data.get("context") or {}
    if not cfg.get("enabled") or not cfg.get("variable_selector"):
        return None
    value = ctx.pool.lookup(list(cfg["variable_selector"]))  # as in Dify, a missing context is no context
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, list):
        return json.dumps(value, ensure_ascii=False)
    parts = []
    for item in value:
        if isinstance(item, str):
            parts.append(item)
        elif isinstance(item, dict) and "content" in item:
            parts.extend(p for p in (item.get("summary"), str(item["content"])) if p)
        else:
            raise WorkflowNodeError(f"context items need a 'content' field, got {str(item)[:80]!r}")
    return "\n".join(parts).strip()


def history(ctx: RunContext, memory: dict | None) -> list[dict]:
    """Earlier turns of the conversation (advanced-chat), cut to memory.window.size turns when the window is on.

    The engine provides them as OpenAI-style messages in `pool.system["history"]` (user/assistant pairs of
    earlier dialogue turns); a plain workflow run has none.
    """
    if not memory:
        return []
    messages = [{"role": m["role"], "content": str(m.get("content") or "")}
                for m in (ctx.pool.system.get("history") or []) if m.get("role") in ("user", "assistant")]
    window = memory.get("window") or {}
    turns = int(window.get("size") or 0) if window.get("enabled") else MAX_HISTORY_TURNS
    if turns <= 0:
        return []
    starts = [i for i, m in enumerate(messages) if m["role"] == "user"]  # a turn starts at a user message
    return messages[starts[-turns]:] if len(starts) > turns else messages


def history_text(messages: list[dict], memory: dict) -> str:
    """History as one text block for completion-mode prompts, with Dify's role prefixes."""
    prefix = memory.get("role_prefix") or {}
    names = {"user": prefix.get("user") or "Human", "assistant": prefix.get("assistant") or "Assistant"}
    return "\n".join(f"{names[m['role']]}: {m['content']}" for m in messages)


def query_text(ctx: RunContext, memory: dict | None) -> str | None:
    """The current query appended after the history: memory.query_prompt_template, else sys.query."""
    if not memory:
        return None
    template = memory.get("query_prompt_template")
    if template:
        return render(ctx, template)
    query = ctx.pool.system.get("query")
    return str(query) if query else None


def prompt_messages(ctx: RunContext, data: dict, context: str | None) -> list[dict]:
    """The llm node's messages, as Dify builds them (see the module docstring)."""
    template, memory = data.get("prompt_template"), data.get("memory")
    past, query = history(ctx, memory), query_text(ctx, memory)
    if isinstance(template, dict):  # completion mode: one text
        text = _template_text(ctx, template, data, context)
        past_text = history_text(past, memory) if memory else ""
        if "#histories#" in text:
            text = text.replace("#histories#", past_text)
        elif past_text:
            text = f"{past_text}\n{text}"
        if query:
            text = text.replace("#sys.query#", query)
        return [{"role": "user", "content": text}]
    messages = []
    for item in template or []:
        text = _template_text(ctx, item, data, context)
        if text.strip():
            messages.append({"role": item.get("role") or "user", "content": text})
    messages += past
    if query:
        messages.append({"role": "user", "content": query})
    if not messages:
        raise WorkflowNodeError("the prompt is empty (no message in prompt_template has text)")
    return messages


def _template_text(ctx: RunContext, item: dict, data: dict, context: str | None) -> str:
    if item.get("edition_type") == "jinja2":
        return render_jinja(ctx, item.get("jinja2_text") or "", data)
    return render(ctx, item.get("text") or "", context)


def template_problems(data: dict) -> list[str]:
    """Static shape problems of an llm node's prompt_template."""
    template = data.get("prompt_template")
    if isinstance(template, dict):
        return [] if isinstance(template.get("text", ""), str) else ["prompt_template.text must be a string"]
    if not isinstance(template, list):
        return ["prompt_template must be a list of {role, text} messages (chat) or {text} (completion)"]
    problems = []
    for i, item in enumerate(template):
        if not isinstance(item, dict):
            problems.append(f"prompt_template[{i}] is not a mapping")
        elif item.get("role", "user") not in ("system", "user", "assistant"):
            problems.append(f"prompt_template[{i}].role {item.get('role')!r} is not system/user/assistant")
    return problems


# --------------------------------------------------------------------------------------------- model calls


def model_shape_problems(model) -> list[str]:
    """Static problems of a node's `model` mapping that need no model store (Services.model_problems does that)."""
    if not isinstance(model, dict) or not str(model.get("name") or "").strip():
        return ["no model configured (data.model.name is empty)"]
    if model.get("mode", "chat") not in ("chat", "completion"):
        return [f"model.mode {model.get('mode')!r} is not chat or completion"]
    if not isinstance(model.get("completion_params") or {}, dict):
        return ["model.completion_params must be a mapping"]
    return []


def node_model(data: dict) -> dict | None:
    """The model mapping a node runs on, in llm-node shape: data.model, or an agent's model-selector value."""
    if isinstance(data.get("model"), dict):
        return data["model"]
    value = ((data.get("agent_parameters") or {}).get("model") or {}).get("value")
    if not isinstance(value, dict):
        return None
    return {"provider": value.get("provider"), "name": value.get("model") or value.get("name"),
            "mode": value.get("mode", "chat"), "completion_params": value.get("completion_params") or {}}


def process_data(model: dict, messages: list[dict], usage: dict, finish_reason: str) -> dict:
    """What Dify records as an llm-like node's process_data."""
    return {"model_mode": model.get("mode", "chat"), "prompts": messages, "usage": usage,
            "finish_reason": finish_reason, "model_provider": model.get("provider"), "model_name": model.get("name")}


def call_model(ctx: RunContext, model: ChatModel, messages: list[dict], options: dict, *,
               stream_to: list[str] | None = None, tools: list[dict] | None = None) -> tuple[ChatResponse, float]:
    """One streamed request; each text piece goes to ctx.stream(stream_to) as it arrives. -> (response, seconds)."""
    t0, deltas = time.monotonic(), []
    try:
        with contextlib.closing(iter(model.stream(messages, tools=tools, **options))) as stream:
            for delta in stream:
                deltas.append(delta)
                if stream_to is not None and delta.text:
                    ctx.stream(stream_to, delta.text)
                ctx.check_deadline()
    except WorkflowNodeError:
        raise
    except (AthanorError, ValueError) as e:  # bad sampling options, context too long, server refusal
        raise WorkflowNodeError(f"model call failed: {e}") from None
    return collect(iter(deltas)), time.monotonic() - t0


def usage_dict(usage: Usage, latency_s: float) -> dict:
    """Usage in Dify's output shape (prices are zero: local models)."""
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens, "total_price": "0",
            "currency": "USD", "latency": round(latency_s, 3)}


# --------------------------------------------------------------------------------------------- JSON replies

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def extract_json(text: str) -> Any:
    """The first JSON object or array in a model's reply (fenced or bare, trailing chatter ignored); None if none."""
    candidates = [m.group(1) for m in _FENCE.finditer(text or "")] + [text or ""]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        for i, ch in enumerate(candidate):
            if ch in "{[":
                try:
                    value, _ = decoder.raw_decode(candidate, i)
                    return value
                except json.JSONDecodeError:
                    continue
    return None


def schema_problems(value: Any, schema: dict) -> list[str]:
    """Where `value` breaks a JSON schema (jsonschema when installed, else top-level type/required/properties)."""
    try:
        import jsonschema
    except ImportError:
        return _basic_schema_problems(value, schema)
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))]


_PY_TYPES = {"object": dict, "array": list, "string": str, "number": (int, float), "integer": int, "boolean": bool}


def _basic_schema_problems(value: Any, schema: dict) -> list[str]:
    want = _PY_TYPES.get(schema.get("type"))
    if want and (not isinstance(value, want) or (isinstance(value, bool) and schema.get("type") != "boolean")):
        return [f"(root): expected {schema['type']}"]
    if not isinstance(value, dict):
        return []
    problems = [f"(root): {k!r} is a required property" for k in schema.get("required", []) if k not in value]
    for key, sub in (schema.get("properties") or {}).items():
        if key in value and isinstance(sub, dict):
            problems += [p.replace("(root)", key, 1) for p in _basic_schema_problems(value[key], sub)]
    return problems


def structured_output_instruction(schema: dict) -> str:
    """The system-prompt paragraph that asks for JSON matching the node's schema."""
    return ("Reply with one JSON object only, no other text, that matches this JSON schema:\n"
            + json.dumps(schema, ensure_ascii=False))
