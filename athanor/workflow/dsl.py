"""Dify's app DSL as our native workflow format: read an exported app YAML into an `App`, dump it back.

Accepted: the YAML Dify exports (`version`, `kind: app`, `app: {name, mode, ...}`, `workflow: {graph: {nodes,
edges}, environment_variables, conversation_variables, features}`), and the same wrapped as `{"data": "<yaml>"}`
(what Dify's export API returns), in JSON or YAML. `workflow` and `advanced-chat` apps have a graph; `chat`,
`agent-chat` and `completion` apps have a `model_config` instead, turned into the equivalent graph by
easy_apps.py (they run as advanced-chat / workflow: `App.runs_as`). Canvas sticky notes (`custom-note` nodes,
data.type '') carry no logic and are left out of the graph (kept in `raw`).
The App keeps the whole parsed document (`raw`); nodes and edges point into it, so `dump_app` writes back
everything we did not touch (positions, viewport, dependencies) in the same format.
Not for: checking the graph (validate.py) or running it (engine.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from athanor.workflow.errors import WorkflowError

MODES = ("workflow", "advanced-chat", "chat", "agent-chat", "completion")
GRAPH_MODES = ("workflow", "advanced-chat")
RUNS_AS = {"workflow": "workflow", "advanced-chat": "advanced-chat", "chat": "advanced-chat",
           "agent-chat": "advanced-chat", "completion": "workflow"}
CONTAINER_TYPES = ("iteration", "loop")


@dataclass
class NodeSpec:
    """One graph node: its id, its `data` mapping (type, title, config) and, inside a container, the parent."""

    id: str
    data: dict
    parent_id: str | None = None

    @property
    def type(self) -> str:
        return str(self.data.get("type", ""))

    @property
    def title(self) -> str:
        return str(self.data.get("title") or self.id)


@dataclass
class EdgeSpec:
    id: str
    source: str
    target: str
    source_handle: str = "source"


@dataclass
class App:
    """A parsed Dify app. `raw` is the document; everything else is a view into it."""

    raw: dict
    nodes: dict[str, NodeSpec] = field(default_factory=dict)
    edges: list[EdgeSpec] = field(default_factory=list)
    source: str = "<memory>"

    @property
    def name(self) -> str:
        return str(self.raw.get("app", {}).get("name") or "")

    @property
    def mode(self) -> str:
        return str(self.raw.get("app", {}).get("mode") or "")

    @property
    def runs_as(self) -> str:
        """The graph semantics this app runs with: chat and agent-chat apps as advanced-chat, completion as workflow."""
        return RUNS_AS.get(self.mode, self.mode)

    @property
    def version(self) -> str:
        return str(self.raw.get("version") or "")

    @property
    def workflow(self) -> dict:
        return self.raw.get("workflow") or {}

    @property
    def features(self) -> dict:
        return self.workflow.get("features") or {}

    @property
    def environment_variables(self) -> list[dict]:
        return list(self.workflow.get("environment_variables") or [])

    @property
    def conversation_variables(self) -> list[dict]:
        return list(self.workflow.get("conversation_variables") or [])

    def environment(self) -> dict[str, Any]:
        """Environment variable name -> value (secrets export as empty strings; pass real ones at run time)."""
        return {v["name"]: _cast_declared(v.get("value"), v.get("value_type")) for v in self.environment_variables
                if isinstance(v, dict) and v.get("name")}

    def conversation_defaults(self) -> dict[str, Any]:
        return {v["name"]: _cast_declared(v.get("value"), v.get("value_type")) for v in self.conversation_variables
                if isinstance(v, dict) and v.get("name")}

    def children(self, container_id: str | None) -> list[NodeSpec]:
        """Nodes directly inside `container_id` (None: the top level)."""
        return [n for n in self.nodes.values() if n.parent_id == container_id]

    def start_nodes(self) -> list[NodeSpec]:
        return [n for n in self.children(None) if n.type == "start"]


def _cast_declared(value: Any, value_type: str | None) -> Any:
    if value_type == "number" and isinstance(value, str) and value.strip():
        try:
            number = float(value)
            return int(number) if number.is_integer() and "." not in value else number
        except ValueError:
            return value
    if value_type and value_type.startswith(("object", "array")) and isinstance(value, str) and value.strip():
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


# --------------------------------------------------------------------------------------------- reading


def load_app(source: str | Path | dict) -> App:
    """A path to a .yml/.yaml/.json file, the YAML text itself, or an already parsed mapping -> App."""
    if isinstance(source, dict):
        return parse_app(source, "<memory>")
    text, name = _read_source(source)
    return parse_app(_parse_text(text, name), name)


def _read_source(source: str | Path) -> tuple[str, str]:
    text = str(source)
    if isinstance(source, Path) or ("\n" not in text and not text.lstrip().startswith(("{", "[")) and len(text) < 1024):
        path = Path(source)
        if not path.is_file():
            raise WorkflowError(f"workflow file {str(path)!r} not found")
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as e:
            raise WorkflowError(f"cannot read workflow file {str(path)!r}: {e}") from None
    return str(source), "<text>"


def _parse_text(text: str, name: str) -> dict:
    doc = None
    if text.lstrip().startswith("{"):  # JSON first: YAML cannot read JSON's \ud83e-style surrogate escapes
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            pass
    try:
        doc = doc if doc is not None else yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "syntax error"
        raise WorkflowError(f"{name}: not valid YAML ({first})") from None
    if isinstance(doc, dict) and set(doc) == {"data"} and isinstance(doc["data"], str):
        return _parse_text(doc["data"], name)  # Dify's export API wraps the YAML as {"data": "<yaml>"}
    if not isinstance(doc, dict):
        raise WorkflowError(f"{name}: expected a Dify app DSL mapping (version, kind, app, workflow)")
    return doc


def parse_app(doc: dict, source: str = "<memory>") -> App:
    """Check the app-level fields and index the graph. Graph problems are left to validate.py."""
    kind = doc.get("kind", "app")
    if kind != "app":
        raise WorkflowError(f"{source}: kind is {kind!r}; only Dify app DSL files (kind: app) are supported")
    meta = doc.get("app")
    if not isinstance(meta, dict):
        raise WorkflowError(f"{source}: no 'app' section; is this a Dify app export?")
    mode = meta.get("mode")
    if mode not in MODES:
        raise WorkflowError(f"{source}: app mode {mode!r} is not a Dify app mode ({', '.join(MODES)})")
    if mode not in GRAPH_MODES:
        from athanor.workflow.easy_apps import model_config_graph

        graph = model_config_graph(doc, source)
    else:
        graph = (doc.get("workflow") or {}).get("graph")
    if not isinstance(graph, dict):
        raise WorkflowError(f"{source}: no workflow.graph section")
    app = App(raw=doc, source=source)
    for i, raw in enumerate(graph.get("nodes") or []):
        if _is_note(raw):
            continue  # a sticky note on Dify's canvas: no logic, no edges
        node = _node_spec(raw, i, source)
        if node.id in app.nodes:
            raise WorkflowError(f"{source}: node id {node.id!r} appears twice")
        app.nodes[node.id] = node
    app.edges = [_edge_spec(raw, i, source) for i, raw in enumerate(graph.get("edges") or [])]
    return app


def _is_note(raw: Any) -> bool:
    return isinstance(raw, dict) and (raw.get("type") == "custom-note" or
                                      (isinstance(raw.get("data"), dict) and raw["data"].get("type") == ""
                                       and "text" in raw["data"]))


def _node_spec(raw: Any, i: int, source: str) -> NodeSpec:
    if not isinstance(raw, dict) or raw.get("id") in (None, "") or not isinstance(raw.get("data"), dict):
        raise WorkflowError(f"{source}: graph node #{i + 1} needs an id and a data mapping")
    data = raw["data"]
    parent = raw.get("parentId") or data.get("iteration_id") or data.get("loop_id")
    if not parent and (data.get("isInIteration") or data.get("isInLoop")):
        parent = None  # flagged as inside but no parent named: validate.py reports it as unreachable
    return NodeSpec(id=str(raw["id"]), data=data, parent_id=str(parent) if parent else None)


def _edge_spec(raw: Any, i: int, source: str) -> EdgeSpec:
    if not isinstance(raw, dict) or not raw.get("source") or not raw.get("target"):
        raise WorkflowError(f"{source}: graph edge #{i + 1} needs a source and a target")
    edge_id = str(raw.get("id") or f"{raw['source']}-{raw.get('sourceHandle', 'source')}-{raw['target']}")
    return EdgeSpec(edge_id, str(raw["source"]), str(raw["target"]), str(raw.get("sourceHandle") or "source"))


# --------------------------------------------------------------------------------------------- writing


def dump_app(app: App, wrapped: bool = False) -> str:
    """The app as Dify's YAML (or `{"data": "<yaml>"}` JSON when `wrapped`)."""
    text = yaml.safe_dump(app.raw, allow_unicode=True, sort_keys=False, default_flow_style=False, width=120)
    return json.dumps({"data": text}, ensure_ascii=False) if wrapped else text


def save_app(app: App, path: str | Path, wrapped: bool = False) -> Path:
    path = Path(path)
    path.write_text(dump_app(app, wrapped), encoding="utf-8")
    return path
