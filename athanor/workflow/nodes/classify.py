"""question-classifier and parameter-extractor: model nodes whose reply is parsed rather than passed on.

question-classifier: the model picks one of `classes` for the query; the node outputs class_name and class_id
and takes the edge whose sourceHandle is that class id. The reply is read leniently (small models drift):
JSON {"category_id"|"category_name"}, then the exact class name, then a class number, then the first class
name mentioned; when nothing matches, the first class is taken (as Dify does) and process_data says so.

parameter-extractor: the model fills `parameters` [{name, type, description, required, options}] from the
query. reasoning_mode function_call offers one `extract_parameters` tool; a model that answers in text instead
(or reasoning_mode prompt) is read for a JSON object. Values are coerced to their types; outputs are every
parameter (a type's empty value when missing) plus __is_success (1/0) and __reason (None or why), as in Dify:
a failed extraction is a successful node run with __is_success 0.
Not for: free text generation (model.py's llm node).
"""

from __future__ import annotations

import json
import re

from athanor.workflow import prompting
from athanor.workflow.nodes.base import Node, NodeResult, RunContext, WorkflowNodeError, register
from athanor.workflow.prompting import model_shape_problems, process_data

CLASSIFIER_SYSTEM = """You are a text classifier. Read the user's text and decide which one category it belongs to.
{instruction}{histories}
Categories:
{categories}

Reply with the number of the one best category and nothing else."""

EXTRACTOR_SYSTEM = """You extract structured parameters from the user's text.
{instruction}
Parameters:
{parameters}
{how}"""
HOW_TOOL = "Call the extract_parameters function with the values you find in the text."
HOW_JSON = ("Reply with one JSON object only, no other text, whose keys are the parameter names; "
            "leave out parameters that the text does not give. JSON schema:\n{schema}")


def _query(ctx: RunContext, selector) -> str:
    if not selector:
        raise WorkflowNodeError("no query variable selected")
    value = ctx.pool.get(list(selector))
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _instruction(ctx: RunContext, data: dict) -> str:
    return prompting.render(ctx, data.get("instruction") or "").strip()


# --------------------------------------------------------------------------------------------- classifier


@register
class QuestionClassifierNode(Node):
    type = "question-classifier"

    def check(self, app) -> list[str]:
        problems = model_shape_problems(self.data.get("model"))
        classes = self.data.get("classes")
        if not isinstance(classes, list) or not classes:
            problems.append("question-classifier has no classes")
        elif any(not isinstance(c, dict) or not c.get("id") for c in classes):
            problems.append("every class needs an id")
        if not self.data.get("query_variable_selector"):
            problems.append("no query variable selected (query_variable_selector)")
        return problems

    def run(self, ctx: RunContext) -> NodeResult:
        data, model_cfg = self.data, self.data.get("model") or {}
        classes = [c for c in data.get("classes") or [] if c.get("id")]
        if not classes:
            raise WorkflowNodeError("question-classifier has no classes")
        query = _query(ctx, data.get("query_variable_selector"))
        memory = data.get("memory")
        past = prompting.history_text(prompting.history(ctx, memory), memory) if memory else ""
        instruction = _instruction(ctx, data)
        system = CLASSIFIER_SYSTEM.format(
            instruction=f"Instructions: {instruction}\n" if instruction else "",
            histories=f"Conversation so far:\n{past}\n" if past else "",
            categories="\n".join(f"{i}. {c.get('name') or c['id']}" for i, c in enumerate(classes, 1)))
        messages = [{"role": "system", "content": system}, {"role": "user", "content": query}]
        options = {"temperature": 0.0, "max_tokens": 32} | prompting.model_options(model_cfg)
        model = ctx.services.chat_model(model_cfg)
        response, latency = prompting.call_model(ctx, model, messages, options)
        chosen, how = pick_class(response.text, classes)
        usage = prompting.usage_dict(response.usage, latency)
        details = process_data(model_cfg, messages, usage, response.finish_reason) | {"reply": response.text,
                                                                                      "matched_by": how}
        if how == "fallback":
            details["note"] = "the reply names no class; took the first class"
        outputs = {"class_name": chosen.get("name") or "", "class_id": chosen["id"], "usage": usage}
        return NodeResult(outputs, handle=str(chosen["id"]), inputs={"query": query}, process_data=details,
                          metadata={"total_tokens": usage["total_tokens"]})


def pick_class(reply: str, classes: list[dict]) -> tuple[dict, str]:
    """The class a reply means, and how it was read: json / name / number / mention / fallback."""
    by_id = {str(c["id"]): c for c in classes}
    by_name = {str(c.get("name") or "").strip().lower(): c for c in classes if str(c.get("name") or "").strip()}
    value = prompting.extract_json(reply)
    if isinstance(value, dict):
        if str(value.get("category_id")) in by_id:
            return by_id[str(value["category_id"])], "json"
        if str(value.get("category_name") or "").strip().lower() in by_name:
            return by_name[str(value["category_name"]).strip().lower()], "json"
    bare = reply.strip().strip(" .\"'`*").lower()
    if bare in by_name:
        return by_name[bare], "name"
    number = re.search(r"\d+", reply)
    if number and 1 <= int(number.group()) <= len(classes):
        return classes[int(number.group()) - 1], "number"
    lowered = reply.lower()
    mentions = [(_find(name, lowered), -len(name), c) for name, c in by_name.items()]
    mentions += [(_find(cid.lower(), lowered), -len(cid), c) for cid, c in by_id.items()]
    mentions = [m for m in mentions if m[0] >= 0]
    if mentions:
        return min(mentions, key=lambda m: m[:2])[2], "mention"
    return classes[0], "fallback"


def _find(term: str, text: str) -> int:
    """Where `term` occurs in `text` as a whole word (for Latin letters and digits; CJK has no word breaks), or -1."""
    edge = r"[A-Za-z0-9]"
    pattern = (f"(?<!{edge})" if re.match(edge, term) else "") + re.escape(term)
    pattern += f"(?!{edge})" if re.match(edge, term[-1:]) else ""
    found = re.search(pattern, text)
    return found.start() if found else -1


# --------------------------------------------------------------------------------------------- extractor

_SCALARS = {"string": "string", "number": "number", "bool": "boolean", "boolean": "boolean", "select": "string"}
_ARRAY = re.compile(r"^array\[(string|number|object|bool|boolean)\]$")


def parameter_schema(parameters: list[dict]) -> dict:
    """Dify parameter definitions -> one JSON schema object."""
    props, required = {}, []
    for p in parameters:
        kind = p.get("type", "string")
        if kind in _SCALARS:
            prop = {"type": _SCALARS[kind]}
        else:
            item = _ARRAY.match(kind).group(1)
            prop = {"type": "array", "items": {"type": _SCALARS.get(item, item)}}
        if kind == "select" and p.get("options"):
            prop["enum"] = list(p["options"])
        if p.get("description"):
            prop["description"] = p["description"]
        props[p["name"]] = prop
        if p.get("required"):
            required.append(p["name"])
    return {"type": "object", "properties": props, "required": required}


def empty_value(kind: str):
    return {"number": 0, "bool": False, "boolean": False}.get(kind, [] if kind.startswith("array") else "")


def coerce(p: dict, value):
    """A model's value -> the parameter's type; ValueError with a one-line reason when it cannot be."""
    kind, name = p.get("type", "string"), p["name"]
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"parameter {name}: expected a number, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"parameter {name}: expected a number, got {value!r}") from None
        return int(number) if number.is_integer() and "." not in str(value) else number
    if kind in ("bool", "boolean"):
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() in ("true", "yes", "1", "false", "no", "0"):
            return str(value).strip().lower() in ("true", "yes", "1")
        raise ValueError(f"parameter {name}: expected true or false, got {value!r}")
    if kind.startswith("array"):
        if not isinstance(value, list):
            raise ValueError(f"parameter {name}: expected a list, got {value!r}")
        item = {"type": _ARRAY.match(kind).group(1), "name": f"{name}[]"}
        if item["type"] == "object":
            if not all(isinstance(v, dict) for v in value):
                raise ValueError(f"parameter {name}: expected a list of objects, got {value!r}")
            return value
        return [coerce(item, v) for v in value]
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if kind == "select" and p.get("options") and text not in p["options"]:
        raise ValueError(f"parameter {name}: {text!r} is not one of {p['options']}")
    return text


def read_parameters(parameters: list[dict], raw) -> tuple[dict, str | None]:
    """The model's values -> ({name: typed value, missing ones empty}, the first problem or None)."""
    values = {p["name"]: empty_value(p.get("type", "string")) for p in parameters}
    if not isinstance(raw, dict):
        return values, "the model's reply holds no JSON object of parameters"
    problem = None
    for p in parameters:
        value = raw.get(p["name"])
        if value is None or value == "":
            if p.get("required") and problem is None:
                problem = f"parameter {p['name']} is required but was not extracted"
            continue
        try:
            values[p["name"]] = coerce(p, value)
        except ValueError as e:
            problem = problem or str(e)
    return values, problem


@register
class ParameterExtractorNode(Node):
    type = "parameter-extractor"

    def check(self, app) -> list[str]:
        problems = model_shape_problems(self.data.get("model"))
        params = self.data.get("parameters")
        if not isinstance(params, list) or not params:
            return problems + ["parameter-extractor has no parameters"]
        for p in params:
            kind = p.get("type", "string") if isinstance(p, dict) else None
            if not isinstance(p, dict) or not p.get("name"):
                problems.append("every parameter needs a name")
            elif kind not in _SCALARS and not _ARRAY.match(str(kind)):
                problems.append(f"parameter {p['name']}: unknown type {kind!r}")
            elif p["name"] in ("__is_success", "__reason", "__usage"):
                problems.append(f"parameter name {p['name']!r} is reserved")
        if not self.data.get("query"):
            problems.append("no query variable selected (query)")
        if self.data.get("reasoning_mode", "function_call") not in ("prompt", "function_call"):
            problems.append(f"reasoning_mode {self.data.get('reasoning_mode')!r} is not prompt or function_call")
        return problems

    def run(self, ctx: RunContext) -> NodeResult:
        data, model_cfg = self.data, self.data.get("model") or {}
        params = data.get("parameters") or []
        query, schema = _query(ctx, data.get("query")), parameter_schema(params)
        use_tool = data.get("reasoning_mode", "function_call") == "function_call"
        lines = "\n".join(f"- {p['name']} ({p.get('type', 'string')}{', required' if p.get('required') else ''})"
                          f"{': ' + p['description'] if p.get('description') else ''}"
                          f"{' one of ' + json.dumps(p['options']) if p.get('options') else ''}" for p in params)
        how = HOW_TOOL if use_tool else HOW_JSON.format(schema=json.dumps(schema, ensure_ascii=False))
        system = EXTRACTOR_SYSTEM.format(instruction=_instruction(ctx, data), parameters=lines, how=how)
        messages = [{"role": "system", "content": system}, *prompting.history(ctx, data.get("memory")),
                    {"role": "user", "content": query}]
        tools = [{"type": "function", "function": {"name": "extract_parameters", "parameters": schema,
                                                   "description": "Record the parameters found in the text."}}]
        options = {"temperature": 0.0} | prompting.model_options(model_cfg)
        model = ctx.services.chat_model(model_cfg)
        response, latency = prompting.call_model(ctx, model, messages, options, tools=tools if use_tool else None)
        raw = _tool_arguments(response) if response.tool_calls else prompting.extract_json(response.text)
        values, problem = read_parameters(params, raw)
        usage = prompting.usage_dict(response.usage, latency)
        details = process_data(model_cfg, messages, usage, response.finish_reason) | {
            "reply": response.text, "tool_calls": [c.arguments for c in response.tool_calls]}
        outputs = values | {"__is_success": 0 if problem else 1, "__reason": problem, "__usage": usage}
        return NodeResult(outputs, inputs={"query": query}, process_data=details,
                          metadata={"total_tokens": usage["total_tokens"]})


def _tool_arguments(response):
    call = next((c for c in response.tool_calls if c.name == "extract_parameters"), response.tool_calls[0])
    try:
        return json.loads(call.arguments or "{}")
    except json.JSONDecodeError:
        return prompting.extract_json(call.arguments)
