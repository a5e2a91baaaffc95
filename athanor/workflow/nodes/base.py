"""The node contract shared by every workflow node type: Node, NodeResult, RunContext, register.

A node is built from its DSL `data` mapping, checks itself statically (`check`) and runs once per
execution (`run`) against a RunContext the engine builds. Nodes publish outputs into the variable pool
through their NodeResult; the engine owns scheduling, events, error strategies and persistence.
Not for: graph semantics (engine.py) or the DSL format (dsl.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from athanor.workflow.errors import WorkflowError, WorkflowNodeError

if TYPE_CHECKING:
    from athanor.workflow.dsl import App
    from athanor.workflow.pool import VariablePool
    from athanor.workflow.services import Services


@dataclass
class NodeResult:
    outputs: dict = field(default_factory=dict)  # variables this node publishes: pool[node_id][name]
    handle: str = "source"  # the sourceHandle taken: "source", a case id or "false", a class id, success/fail-branch
    inputs: dict = field(default_factory=dict)  # for persistence / node_finished events
    process_data: dict = field(default_factory=dict)  # e.g. the rendered prompt
    metadata: dict = field(default_factory=dict)  # e.g. {"total_tokens": n}


class NodeWarning(str):
    """A check() message that does not stop a run (validate reports it as a warning): e.g. a marketplace
    tool that is not installed fails only its own node, under that node's error strategy."""


class Node:
    """One node of the graph. Subclasses set `type` (Dify's data.type) and implement `run`."""

    type: ClassVar[str] = ""

    def __init__(self, node_id: str, data: dict):
        self.id, self.data, self.title = node_id, data, data.get("title", node_id)

    def check(self, app: App) -> list[str]:
        """Static problems, one message each (no node id: the validator prefixes it)."""
        return []

    def run(self, ctx: RunContext) -> NodeResult:
        """Raise WorkflowNodeError(message) on failure; the engine applies error strategies."""
        raise NotImplementedError


class RunContext:
    """What a running node sees: the pool, the services, and hooks back into the engine (one per execution)."""

    def __init__(self, pool: VariablePool, services: Services, node_id: str, run_id: str, *,
                 on_stream: Callable[[list, str], None] | None = None,
                 on_event: Callable[[str, dict], None] | None = None,
                 deadline: float | None = None, engine: Any = None):
        self.pool, self.services, self.node_id, self.run_id = pool, services, node_id, run_id
        self._on_stream, self._on_event, self._deadline = on_stream, on_event, deadline
        self.engine = engine  # the running engine: container nodes (iteration, loop) run sub-graphs through it

    def render(self, template: str) -> str:
        """"{{#node_id.var#}}" / "{{#sys.query#}}" / "{{#env.X#}}" substituted from the pool."""
        return self.pool.render(template)

    def stream(self, selector: list[str], text: str) -> None:
        """An LLM node calls this for each text chunk of its output variable (selector = [node_id, "text"])."""
        if self._on_stream is not None:
            self._on_stream(list(selector), text)

    def emit(self, event: str, data: dict) -> None:
        """Other events (agent_log etc.), passed to the run's event stream as they are."""
        if self._on_event is not None:
            self._on_event(event, data)

    def check_deadline(self) -> None:
        """Raises WorkflowNodeError when the run's time limit passed or the run was asked to stop."""
        stop = getattr(self.services, "stop", None)
        if stop is not None and stop.is_set():
            raise WorkflowNodeError("the run was stopped")
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise WorkflowNodeError("workflow time limit exceeded")


__all__ = ["NODE_TYPES", "Node", "NodeResult", "NodeWarning", "RunContext", "WorkflowError", "WorkflowNodeError", "register"]

NODE_TYPES: dict[str, type[Node]] = {}


def register(cls: type[Node]) -> type[Node]:
    """Class decorator: make a node type known by its Dify data.type."""
    assert cls.type, f"{cls.__name__} has no type"
    NODE_TYPES[cls.type] = cls
    return cls
