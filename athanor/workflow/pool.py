"""VariablePool: every value a workflow run has produced, addressed by Dify selectors.

A selector is a list: `[node_id, variable, *path]`, where `path` walks into objects (dict keys) and arrays
(integer positions). Namespaces beside node ids: `sys` (query, files, conversation_id, user_id,
workflow_run_id, dialogue_count, app_id, workflow_id), `env` (environment variables) and `conversation`
(conversation variables). Templates use `{{#node_id.var#}}`. One pool per run; an iteration round gets a
child pool that shares sys/env/conversation and copies the node values it can see.
Not for: deciding which nodes run (engine.py) or type checking declared outputs (the nodes do that).
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from athanor.workflow.errors import WorkflowNodeError

# Dify's reference syntax: a node id (or sys/env/conversation), then 1..10 dotted names.
TEMPLATE_REF = re.compile(r"\{\{#([a-zA-Z0-9_]{1,50}(?:\.[a-zA-Z0-9_][a-zA-Z0-9_\-]{0,49}){1,10})#\}\}")
SHARED_NAMESPACES = ("sys", "env", "conversation")
_MISSING = object()


class VariablePool:
    """Values by node id and name; thread-safe for parallel branches (one lock, tiny critical sections)."""

    def __init__(self, system: dict | None = None, environment: dict | None = None,
                 conversation: dict | None = None):
        self._values: dict[str, dict[str, Any]] = {"sys": dict(system or {}), "env": dict(environment or {}),
                                                   "conversation": dict(conversation or {})}
        self._lock = threading.RLock()

    @property
    def system(self) -> dict:
        return self._values["sys"]

    @property
    def conversation(self) -> dict:
        return self._values["conversation"]

    def set(self, node_id: str, name: str, value: Any) -> None:
        with self._lock:
            self._values.setdefault(node_id, {})[name] = value

    def set_outputs(self, node_id: str, outputs: dict) -> None:
        with self._lock:
            self._values.setdefault(node_id, {}).update(outputs)

    def node_values(self, node_id: str) -> dict:
        with self._lock:
            return dict(self._values.get(node_id, {}))

    def get(self, selector: list[str]) -> Any:
        """The value at `selector`; WorkflowNodeError "variable #a.b# is not defined" when there is none."""
        value = self.lookup(selector, _MISSING)
        if value is _MISSING:
            raise WorkflowNodeError(f"variable #{'.'.join(map(str, selector))}# is not defined")
        return value

    def lookup(self, selector: list, default: Any = None) -> Any:
        """The value at `selector`, or `default` when any step of it is missing."""
        if not isinstance(selector, (list, tuple)) or len(selector) < 2:
            return default
        selector = legacy_sys(selector)
        with self._lock:
            scope = self._values.get(str(selector[0]))
            if scope is None or str(selector[1]) not in scope:
                return default
            value = scope[str(selector[1])]
        for key in selector[2:]:
            value = _step(value, key)
            if value is _MISSING:
                return default
        return value

    def has(self, selector: list) -> bool:
        """Whether `selector` names a value (legacy [start_id, "sys.query"] selectors read sys.query)."""
        return self.lookup(selector, _MISSING) is not _MISSING

    def render(self, template: str) -> str:
        """Substitute every `{{#a.b#}}`; a reference to nothing renders as "" (as Dify does)."""
        if not template:
            return ""
        return TEMPLATE_REF.sub(lambda m: to_text(self.lookup(m.group(1).split("."))), str(template))

    def child(self) -> VariablePool:
        """A pool for one iteration round: shares sys/env/conversation, copies node values."""
        with self._lock:
            pool = VariablePool()
            pool._values = {k: (v if k in SHARED_NAMESPACES else dict(v)) for k, v in self._values.items()}
            pool._lock = self._lock  # shared namespaces are shared dicts: guard them with one lock
            return pool

    def snapshot(self) -> dict:
        """A JSON-able copy of everything (for debugging and tests)."""
        with self._lock:
            return json.loads(json.dumps(self._values, default=str))


def _step(value: Any, key: Any) -> Any:
    if isinstance(value, dict):
        return value.get(str(key), _MISSING)
    if isinstance(value, (list, tuple)):
        try:
            return value[int(key)]
        except (ValueError, IndexError):
            return _MISSING
    return getattr(value, str(key), _MISSING)


def to_text(value: Any) -> str:
    """How a value reads inside a rendered template: strings as they are, objects and arrays as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def template_selectors(template: str) -> list[list[str]]:
    """Every selector a `{{#...#}}` template refers to, in order."""
    return [m.group(1).split(".") for m in TEMPLATE_REF.finditer(str(template or ""))]


def legacy_sys(selector):
    """Older Dify exports select system variables through the start node: [start_id, "sys.query"]."""
    if len(selector) >= 2 and isinstance(selector[1], str) and selector[1].startswith("sys."):
        return ["sys", selector[1][4:], *selector[2:]]
    return selector
