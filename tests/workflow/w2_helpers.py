"""Helpers for W2's workflow tests: a RunContext over a real VariablePool with a scripted model behind Services.

The scripted model is tests/agent/scripted.py's ScriptedChatModel (replays given replies, records requests).
"""

from __future__ import annotations

from athanor.workflow.pool import VariablePool
from athanor.workflow.services import Services
from tests.agent.scripted import ScriptedChatModel  # noqa: F401  (re-exported for the tests)

SCRIPTED = "scripted-spec"
MODEL = {"provider": "langgenius/openai/openai", "name": "gpt-4o-mini", "mode": "chat",
         "completion_params": {"temperature": 0.3, "max_tokens": 64, "response_format": "text"}}


class Run:
    """One node execution's context plus what it sent back: streamed chunks and events."""

    def __init__(self, values: dict | None = None, system: dict | None = None, model=None,
                 services: Services | None = None, node_id: str = "n1"):
        from athanor.workflow.nodes.base import RunContext

        self.pool = VariablePool(system=system or {})
        for node, outputs in (values or {}).items():
            for name, value in outputs.items():
                self.pool.set(node, name, value)
        self.services = services or Services(default_model=SCRIPTED)
        if model is not None:
            self.services.register_model(SCRIPTED, model)
        self.chunks: list[tuple[list, str]] = []
        self.events: list[tuple[str, dict]] = []
        self.ctx = RunContext(self.pool, self.services, node_id, "run-1",
                              on_stream=lambda sel, text: self.chunks.append((sel, text)),
                              on_event=lambda ev, data: self.events.append((ev, data)))

    def execute(self, node_cls, data: dict):
        node = node_cls(self.ctx.node_id, data)
        return node.run(self.ctx)

    def streamed(self) -> str:
        return "".join(text for _, text in self.chunks)


def llm_data(prompt, **extra) -> dict:
    return {"type": "llm", "title": "LLM", "model": dict(MODEL), "prompt_template": prompt,
            "context": {"enabled": False, "variable_selector": []}, "vision": {"enabled": False}, **extra}
