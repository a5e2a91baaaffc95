"""Helpers for workflow tests: build Dify-format app documents in a few lines, run them, collect events.

`dify_app(nodes, edges)` writes the same structure Dify exports (version, kind, app, workflow.graph with
`data`-wrapped nodes and sourceHandle edges), so every test goes through the DSL reader.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
import yaml

FIXTURES = Path(__file__).parent / "fixtures" / "w1"


def node(node_id: str, type_: str, parent: str | None = None, **data) -> dict:
    body = {"type": type_, "title": data.pop("title", node_id), **data}
    out = {"id": node_id, "type": "custom", "data": body, "position": {"x": 0, "y": 0}}
    if parent:
        out["parentId"] = parent
    return out


def edge(source: str, target: str, handle: str = "source") -> dict:
    return {"id": f"{source}-{handle}-{target}", "source": source, "sourceHandle": handle, "target": target,
            "targetHandle": "target", "type": "custom", "data": {}}


def chain(*ids: str) -> list[dict]:
    return [edge(a, b) for a, b in pairwise(ids)]


def dify_app(nodes: list[dict], edges: list[dict], mode: str = "workflow", env: list | None = None,
             conversation: list | None = None, name: str = "test-app") -> dict:
    return {"version": "0.3.1", "kind": "app",
            "app": {"name": name, "mode": mode, "icon": "🤖", "description": ""},
            "dependencies": [],
            "workflow": {"environment_variables": env or [], "conversation_variables": conversation or [],
                         "features": {}, "graph": {"nodes": nodes, "edges": edges, "viewport": {"x": 0, "y": 0}}}}


def start(*variables: str, required: bool = False, types: dict | None = None) -> dict:
    types = types or {}
    return node("start", "start", variables=[{"variable": v, "label": v, "type": types.get(v, "text-input"),
                                               "required": required} for v in variables])


def end(**outputs: list) -> dict:
    return node("end", "end", outputs=[{"variable": k, "value_selector": v} for k, v in outputs.items()])


def code(node_id: str, source: str, outputs: dict | None = None, parent: str | None = None,
         variables: dict | None = None, **data) -> dict:
    data = {"code_language": "python3", **data}
    return node(node_id, "code", parent=parent, code=source,
                variables=[{"variable": k, "value_selector": v} for k, v in (variables or {}).items()],
                outputs={k: {"type": t, "children": None} for k, t in (outputs or {}).items()}, **data)


def load(doc: dict):
    """Through YAML text, as a file would come."""
    from athanor.workflow.dsl import load_app

    return load_app(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))


class Recorder:
    def __init__(self):
        self.events: list[dict] = []

    def __call__(self, event: dict) -> None:
        self.events.append(event)

    def names(self) -> list[str]:
        return [e["event"] for e in self.events]

    def of(self, name: str) -> list[dict]:
        return [e for e in self.events if e["event"] == name]

    def text(self) -> str:
        return "".join(e["data"]["text"] if e["event"] == "text_chunk" else e["answer"]
                       for e in self.events if e["event"] in ("text_chunk", "message"))

    def node_status(self) -> dict:
        return {e["data"]["node_id"]: e["data"]["status"] for e in self.of("node_finished")}


def run_doc(doc: dict, inputs: dict | None = None, services=None, **kwargs):
    from athanor.workflow.engine import WorkflowEngine

    rec = Recorder()
    result = WorkflowEngine(load(doc), services, [rec]).run(inputs or {}, **kwargs)
    return result, rec


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
