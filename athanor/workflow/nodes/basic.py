"""Data nodes of Dify's DSL: start, end, answer, template-transform, variable-aggregator, assigner (v1, v2),
list-operator. Each reads selectors from the pool and publishes outputs; none of them branches.
Not for: branching and containers (flow.py), code / HTTP / files (external.py), models (model.py).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from athanor.workflow.conditions import check_conditions, compare
from athanor.workflow.errors import WorkflowError, WorkflowNodeError
from athanor.workflow.nodes.base import Node, NodeResult, RunContext, register
from athanor.workflow.pool import template_selectors

# ------------------------------------------------------------------------------------------------- start

_INPUT_TYPES = {"text-input", "paragraph", "select", "number", "file", "file-list", "checkbox", "json_object",
                "boolean", "external_data_tool"}


def coerce_start_inputs(data: dict, inputs: dict) -> dict:
    """User inputs checked and cast against the start node's declared variables; WorkflowError when wrong."""
    out = {}
    for var in data.get("variables") or []:
        name, kind = var.get("variable"), var.get("type", "text-input")
        value = inputs.get(name)
        if value in (None, "") and var.get("default") not in (None, ""):
            value = var["default"]
        if value in (None, "", []):
            if var.get("required"):
                raise WorkflowError(f"input {name!r} is required")
            out[name] = None
            continue
        out[name] = _cast_input(name, kind, value, var)
    for name, value in inputs.items():  # undeclared inputs pass through (Dify ignores them; harmless here)
        out.setdefault(name, value)
    return out


def _cast_input(name: str, kind: str, value: Any, var: dict) -> Any:
    if kind == "number":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        try:
            number = float(str(value).strip())
        except ValueError:
            raise WorkflowError(f"input {name!r} must be a number, got {value!r}") from None
        return int(number) if number.is_integer() and "." not in str(value) else number
    if kind in ("checkbox", "boolean"):
        return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")
    if kind == "json_object" and isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise WorkflowError(f"input {name!r} must be a JSON object") from None
    if kind == "file-list" and not isinstance(value, list):
        return [value]
    if kind in ("text-input", "paragraph", "select"):
        value = str(value)
        if kind == "select" and var.get("options") and value not in var["options"]:
            raise WorkflowError(f"input {name!r} must be one of {', '.join(map(str, var['options']))}")
        if var.get("max_length") and kind == "text-input" and len(value) > int(var["max_length"]):
            raise WorkflowError(f"input {name!r} is longer than {var['max_length']} characters")
    return value


@register
class StartNode(Node):
    type = "start"

    def check(self, app) -> list[str]:
        bad = [str(v.get("type")) for v in self.data.get("variables") or [] if v.get("type", "text-input")
               not in _INPUT_TYPES]
        return [f"unknown input type {t!r}" for t in bad]

    def run(self, ctx: RunContext) -> NodeResult:
        values = ctx.pool.node_values("__inputs__")
        return NodeResult(outputs=values, inputs=values)


@register
class EndNode(Node):
    type = "end"

    def run(self, ctx: RunContext) -> NodeResult:
        outputs = {o.get("variable"): ctx.pool.lookup(o.get("value_selector") or [])
                   for o in self.data.get("outputs") or [] if o.get("variable")}
        return NodeResult(outputs=outputs, inputs=outputs)


@register
class AnswerNode(Node):
    type = "answer"

    def run(self, ctx: RunContext) -> NodeResult:
        return NodeResult(outputs={"answer": ctx.render(str(self.data.get("answer", ""))), "files": []})


# ------------------------------------------------------------------------------------------------- text


def _named_inputs(data: dict, ctx: RunContext) -> dict:
    return {v.get("variable"): ctx.pool.lookup(v.get("value_selector") or [])
            for v in data.get("variables") or [] if v.get("variable")}


@register
class TemplateTransformNode(Node):
    """Jinja2 in a sandboxed environment (no attribute access to internals, no imports)."""

    type = "template-transform"
    MAX_OUTPUT = 400_000

    def check(self, app) -> list[str]:
        import jinja2.sandbox

        try:
            jinja2.sandbox.SandboxedEnvironment().parse(str(self.data.get("template", "")))
        except Exception as e:  # noqa: BLE001 - jinja2.TemplateSyntaxError and kin, with its line
            return [f"template does not parse: {e}"]
        return []

    def run(self, ctx: RunContext) -> NodeResult:
        import jinja2
        import jinja2.sandbox

        values = _named_inputs(self.data, ctx)
        try:
            env = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.Undefined)
            text = env.from_string(str(self.data.get("template", ""))).render(**values)
        except jinja2.exceptions.SecurityError as e:
            raise WorkflowNodeError(f"template refused by the sandbox: {e}") from None
        except Exception as e:  # noqa: BLE001 - syntax and runtime errors of the user's template
            raise WorkflowNodeError(f"template error: {type(e).__name__}: {e}") from None
        if len(text) > self.MAX_OUTPUT:
            raise WorkflowNodeError(f"template output is longer than {self.MAX_OUTPUT} characters")
        return NodeResult(outputs={"output": text}, inputs=values)


# ------------------------------------------------------------------------------------------------- variables


@register
class VariableAggregatorNode(Node):
    """The first variable that has a value (the branch that ran); per group with advanced_settings."""

    type = "variable-aggregator"

    def run(self, ctx: RunContext) -> NodeResult:
        settings = self.data.get("advanced_settings") or {}
        if settings.get("group_enabled"):
            outputs = {g.get("group_name", f"group{i}"): {"output": _first(ctx, g.get("variables"))}
                       for i, g in enumerate(settings.get("groups") or [])}
        else:
            outputs = {"output": _first(ctx, self.data.get("variables"))}
        return NodeResult(outputs=outputs)


def _first(ctx: RunContext, selectors: list | None) -> Any:
    for sel in selectors or []:
        value = ctx.pool.lookup(sel)
        if value is not None:
            return value
    return None


@register
class AssignerNode(Node):
    """Writes conversation (or loop) variables. v1: one target + write_mode; v2: `items` with operations."""

    type = "assigner"
    OPERATIONS: ClassVar[set[str]] = {"over-write", "clear", "append", "extend", "set", "+=", "-=", "*=", "/=", "remove-first",
                  "remove-last", "overwrite"}

    def check(self, app) -> list[str]:
        if "items" in self.data:
            return [f"unknown operation {i.get('operation')!r}" for i in self.data["items"] or []
                    if i.get("operation") not in self.OPERATIONS]
        if not self.data.get("assigned_variable_selector"):
            return ["no assigned_variable_selector"]
        return []

    def run(self, ctx: RunContext) -> NodeResult:
        if "items" in self.data:
            items = self.data.get("items") or []
        else:  # v1 -> one v2 item
            items = [{"variable_selector": self.data.get("assigned_variable_selector"),
                      "operation": self.data.get("write_mode", "over-write"), "input_type": "variable",
                      "value": self.data.get("input_variable_selector")}]
        updated = []
        for item in items:
            selector = list(item.get("variable_selector") or [])
            if len(selector) < 2 or not ctx.pool.has(selector[:2]):
                raise WorkflowNodeError(f"variable #{'.'.join(selector)}# to assign is not defined")
            current = ctx.pool.get(selector[:2])
            new = _apply(item.get("operation", "over-write"), current, _item_value(ctx, item))
            ctx.pool.set(selector[0], selector[1], new)
            updated.append({"selector": selector[:2], "value": new})
        return NodeResult(outputs={}, process_data={"updated_variables": updated})


def _item_value(ctx: RunContext, item: dict) -> Any:
    if item.get("operation") in ("clear", "remove-first", "remove-last"):
        return None
    value = item.get("value")
    if item.get("input_type", "variable") == "variable" and isinstance(value, list):
        return ctx.pool.get(value)
    return value


def _apply(op: str, current: Any, value: Any) -> Any:
    if op in ("over-write", "overwrite", "set"):
        return value
    if op == "clear":
        return type(current)() if isinstance(current, (str, list, dict, int, float)) else None
    if op in ("append", "extend"):
        if not isinstance(current, list):
            raise WorkflowNodeError(f"{op} needs an array variable, got {type(current).__name__}")
        return current + (list(value) if op == "extend" and isinstance(value, list) else [value])
    if op in ("remove-first", "remove-last"):
        if not isinstance(current, list):
            raise WorkflowNodeError(f"{op} needs an array variable")
        return current[1:] if op == "remove-first" else current[:-1]
    try:
        a, b = float(current or 0), float(value)
    except (TypeError, ValueError):
        raise WorkflowNodeError(f"{op} needs numbers, got {current!r} and {value!r}") from None
    if op == "/=" and b == 0:
        raise WorkflowNodeError("division by zero in assigner")
    result = {"+=": a + b, "-=": a - b, "*=": a * b, "/=": a / b if b else 0}.get(op)
    if result is None:
        raise WorkflowNodeError(f"unknown assigner operation {op!r}")
    whole = isinstance(current, int) and not isinstance(value, float) and float(result).is_integer() and op != "/="
    return int(result) if whole else result


# ------------------------------------------------------------------------------------------------- lists


@register
class ListOperatorNode(Node):
    """filter_by -> extract_by -> order_by -> limit over an array variable."""

    type = "list-operator"

    def check(self, app) -> list[str]:
        spec = self.data.get("filter_by") or {}
        return check_conditions(spec.get("conditions"), "filter") if spec.get("enabled") else []

    def run(self, ctx: RunContext) -> NodeResult:
        items = ctx.pool.lookup(self.data.get("variable") or [])
        if items is None:
            items = []
        if not isinstance(items, list):
            raise WorkflowNodeError(f"list operator needs an array, got {type(items).__name__}")
        items = self._filter(ctx, list(items))
        extract = self.data.get("extract_by") or {}
        if extract.get("enabled"):
            serial = int(ctx.render(str(extract.get("serial", "1"))) or 1)
            if not 1 <= serial <= len(items):
                raise WorkflowNodeError(f"extract_by serial {serial} is outside the list (1..{len(items)})")
            items = [items[serial - 1]]
        order = self.data.get("order_by") or {}
        if order.get("enabled"):
            key = order.get("key") or ""
            items.sort(key=lambda x: _sort_key(_field(x, key)), reverse=order.get("value") == "desc")
        limit = self.data.get("limit") or {}
        if limit.get("enabled"):
            items = items[: int(limit.get("size", len(items)))]
        return NodeResult(outputs={"result": items, "first_record": items[0] if items else None,
                                   "last_record": items[-1] if items else None})

    def _filter(self, ctx: RunContext, items: list) -> list:
        spec = self.data.get("filter_by") or {}
        if not spec.get("enabled"):
            return items
        conditions = spec.get("conditions") or []
        for cond in conditions:
            expected = cond.get("value")
            expected = ctx.render(expected) if isinstance(expected, str) else expected
            items = [x for x in items if compare(_field(x, cond.get("key") or ""), cond["comparison_operator"],
                                                  expected)]
        return items


def _field(item: Any, key: str) -> Any:
    if key and isinstance(item, dict):
        return item.get(key)
    return item


def _sort_key(value: Any) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, "" if value is None else str(value))


def referenced_selectors(data: dict) -> list[list[str]]:
    """Every selector a node's data refers to (value_selector lists and {{#...#}} templates), for validation."""
    found: list[list[str]] = []

    def walk(obj: Any, key: str = "") -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, k)
        elif isinstance(obj, list):
            if key.endswith("selector") and obj and all(isinstance(x, str) for x in obj):
                found.append(list(obj))
            elif key == "variables" and obj and all(isinstance(x, list) for x in obj):
                found.extend(list(x) for x in obj if x and all(isinstance(s, str) for s in x))
            else:
                for v in obj:
                    walk(v, key)
        elif isinstance(obj, str) and "{{#" in obj:
            found.extend(template_selectors(obj))

    walk(data)
    return found
