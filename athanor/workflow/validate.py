"""Static checks of a Dify app: every problem at once, each with the node (or edge) it concerns.

Finds unknown node types, dangling edges, edges across container boundaries, missing or extra start nodes,
unreachable nodes, cycles outside loop/iteration bodies, variable references to nothing upstream (nor to
sys / env / conversation variables that exist), each node's own `check()`, and, given the run's Services,
every node's model (llm-type nodes and agents: Services.model_problems) and every tool a tool or agent node
names (built-ins, bindings, Services.tools: user and MCP tools). Some findings are warnings, not errors:
a marketplace tool that is not installed or a knowledge base that is not here fails only its own node at run
time (under its error strategy), so the app still runs; `validate_app(..., warnings=[])` collects them.
Not for: anything that needs running the graph.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from athanor.workflow.dsl import CONTAINER_TYPES, App
from athanor.workflow.nodes import NODE_TYPES
from athanor.workflow.nodes.base import NodeWarning
from athanor.workflow.nodes.basic import referenced_selectors
from athanor.workflow.pool import legacy_sys

SYSTEM_VARIABLES = {"query", "files", "conversation_id", "user_id", "workflow_run_id", "dialogue_count", "app_id",
                    "workflow_id", "timestamp"}
_ROOT_TYPES = {None: "start", "iteration": "iteration-start", "loop": "loop-start"}


@dataclass
class Problem:
    node_id: str | None
    message: str
    severity: str = "error"  # or "warning": the app runs; the node may fail under its error strategy

    def __str__(self) -> str:
        text = f"{self.node_id}: {self.message}" if self.node_id else self.message
        return f"warning: {text}" if self.severity == "warning" else text


def validate_app(app: App, services=None, *, check_models: bool | None = None,
                 warnings: list | None = None) -> list[Problem]:
    """All errors found; an empty list means the app is ready to run. Warnings go to `warnings` when given.

    services: the Services a run would get; models are checked against it unless check_models is False
    (default: when services is given), tools always (without it, only the built-ins are known)."""
    found = _all_problems(app, services, services is not None if check_models is None else check_models)
    if warnings is not None:
        warnings += [p for p in found if p.severity == "warning"]
    return [p for p in found if p.severity != "warning"]


def _all_problems(app: App, services, check_models: bool) -> list[Problem]:
    problems: list[Problem] = []
    problems += _check_types_and_parents(app)
    problems += _check_edges(app)
    for container in [None, *[n.id for n in app.nodes.values() if n.type in CONTAINER_TYPES]]:
        problems += _check_level(app, container)
    problems += _check_references(app)
    problems += _check_nodes(app, services, check_models)
    return problems


def structural_problems(app: App) -> list[Problem]:
    """The problems that make a graph impossible to run as drawn (checked by the engine before every run):
    unknown node types, dangling edges, edges across containers, cycles outside loop/iteration bodies."""
    problems = [p for p in _check_types_and_parents(app) if p.node_id is not None] + _check_edges(app)
    for container in [None, *[n.id for n in app.nodes.values() if n.type in CONTAINER_TYPES]]:
        problems += [p for p in _check_level(app, container) if "cycle" in p.message]
    return problems


def _check_types_and_parents(app: App) -> list[Problem]:
    out = []
    for node in app.nodes.values():
        if node.type not in NODE_TYPES:
            out.append(Problem(node.id, f"unknown node type {node.type!r}"))
        if node.parent_id is not None:
            parent = app.nodes.get(node.parent_id)
            if parent is None or parent.type not in CONTAINER_TYPES:
                out.append(Problem(node.id, f"parent {node.parent_id!r} is not an iteration or loop node"))
    ends = {"workflow": "end", "advanced-chat": "answer"}[app.runs_as]
    if not any(n.type == ends for n in app.children(None)):
        out.append(Problem(None, f"{app.runs_as} apps need an {ends} node"))
    return out


def _check_edges(app: App) -> list[Problem]:
    out = []
    for e in app.edges:
        for end, name in ((e.source, "source"), (e.target, "target")):
            if end not in app.nodes:
                other = e.target if name == "source" else e.source
                out.append(Problem(other if other in app.nodes else None,
                                   f"edge {e.id}: {name} node {end!r} does not exist"))
        if e.source in app.nodes and e.target in app.nodes and \
                app.nodes[e.source].parent_id != app.nodes[e.target].parent_id:
            out.append(Problem(e.target, f"edge {e.id} crosses an iteration/loop boundary"))
    return out


def _level_edges(app: App, ids: set[str]) -> dict[str, list[str]]:
    succ: dict[str, list[str]] = defaultdict(list)
    for e in app.edges:
        if e.source in ids and e.target in ids:
            succ[e.source].append(e.target)
    return succ


def _check_level(app: App, container: str | None) -> list[Problem]:
    nodes = app.children(container)
    ids = {n.id for n in nodes}
    succ = _level_edges(app, ids)
    root_type = _ROOT_TYPES[app.nodes[container].type if container else None]
    roots = [n.id for n in nodes if n.type == root_type]
    if container and str(app.nodes[container].data.get("start_node_id") or "") in ids:
        roots = [str(app.nodes[container].data["start_node_id"])]
    out = []
    if not roots and nodes or (container is None and not roots):
        out.append(Problem(container, f"no {root_type} node" + (" inside this container" if container else "")))
    if container is None and len(roots) > 1:
        out.append(Problem(roots[1], "more than one start node"))
    seen, stack = set(roots[:1]), list(roots[:1])
    while stack:
        for t in succ[stack.pop()]:
            if t not in seen:
                seen.add(t)
                stack.append(t)
    out += [Problem(n.id, "unreachable: no path from the start node") for n in nodes if roots and n.id not in seen]
    out += [Problem(nid, "part of a cycle; only loop and iteration nodes may repeat work") for nid in _cycle(ids, succ)]
    return out


def _cycle(ids: set[str], succ: dict[str, list[str]]) -> list[str]:
    """The nodes of one cycle (empty when the level is acyclic)."""
    color, stack_path = dict.fromkeys(ids, 0), []

    def visit(n: str) -> list[str]:
        color[n] = 1
        stack_path.append(n)
        for t in succ[n]:
            if color[t] == 1:
                return stack_path[stack_path.index(t):]
            if color[t] == 0 and (found := visit(t)):
                return found
        color[n] = 2
        stack_path.pop()
        return []

    for n in sorted(ids):
        if color[n] == 0 and (found := visit(n)):
            return found
    return []


def _ancestors(app: App, node_id: str) -> set[str]:
    pred: dict[str, list[str]] = defaultdict(list)
    for e in app.edges:
        pred[e.target].append(e.source)
    seen, stack = set(), [node_id]
    while stack:
        for s in pred[stack.pop()]:
            if s not in seen:
                seen.add(s)
                stack.append(s)
    return seen


def _visible(app: App, node_id: str) -> set[str]:
    """Node ids whose values node_id may read: upstream at its level and at every enclosing level, its
    containers, and (for a container) everything inside it."""
    visible = _ancestors(app, node_id)
    parent = app.nodes[node_id].parent_id
    while parent is not None and parent in app.nodes:
        visible |= {parent} | _ancestors(app, parent)
        parent = app.nodes[parent].parent_id
    if app.nodes[node_id].type in CONTAINER_TYPES:
        inside = [n.id for n in app.nodes.values() if n.parent_id == node_id]
        while inside:
            nid = inside.pop()
            visible.add(nid)
            inside += [n.id for n in app.nodes.values() if n.parent_id == nid]
        visible.add(node_id)
    return visible


def _check_references(app: App) -> list[Problem]:
    env = {v.get("name") for v in app.environment_variables}
    conv = {v.get("name") for v in app.conversation_variables}
    out = []
    for node in app.nodes.values():
        visible = _visible(app, node.id)
        for sel in referenced_selectors(node.data):
            if len(sel) < 2:
                continue
            sel = legacy_sys(sel)
            ref = ".".join(sel)
            scope, name = sel[0], sel[1]
            if scope == "sys":
                ok = name in SYSTEM_VARIABLES
            elif scope == "env":
                ok = name in env
            elif scope == "conversation":
                ok = name in conv
            else:
                ok = scope in visible and _declares(app, scope, name)
                if scope in app.nodes and scope not in visible:
                    out.append(Problem(node.id, f"variable #{ref}# refers to node {scope!r}, which is not upstream"))
                    continue
            if not ok:
                out.append(Problem(node.id, f"variable #{ref}# is not defined"))
    return out


def _declares(app: App, node_id: str, name: str) -> bool:
    node = app.nodes.get(node_id)
    if node is None:
        return False
    if node.type == "start":
        return name in {v.get("variable") for v in node.data.get("variables") or []}
    if node.type == "code" and node.data.get("outputs"):
        return name in node.data["outputs"] or name in ("error_message", "error_type")
    if node.type == "loop":
        return name in {v.get("label") for v in node.data.get("loop_variables") or []} or name == "loop_round"
    if node.type == "iteration":
        return name in ("item", "index", "output", "error_message", "error_type")
    return True


def _check_nodes(app: App, services, check_models: bool) -> list[Problem]:
    from athanor.workflow.prompting import node_model

    out = []
    for node in app.nodes.values():
        cls = NODE_TYPES.get(node.type)
        if cls is None:
            continue
        try:
            instance = cls(node.id, node.data)
            messages = instance.check(app)
            if hasattr(instance, "tool_problems"):  # tool and agent nodes: which tools this run would have
                messages = [*messages, *instance.tool_problems(services)]
            if hasattr(instance, "service_problems"):  # knowledge retrieval: bindings to local bases
                messages = [*messages, *instance.service_problems(services)]
        except Exception as e:  # noqa: BLE001 - a node that cannot even read its own config: report, keep checking others
            messages = [f"invalid configuration ({type(e).__name__}: {e})"]
        model = node_model(node.data) if check_models and services is not None else None
        if model is not None:
            messages = [*messages, *services.model_problems(model)]
        out += [Problem(node.id, str(m), "warning" if isinstance(m, NodeWarning) else "error")
                for m in dict.fromkeys(messages)]  # a node may report its model too
        strategy = node.data.get("error_strategy")
        if strategy not in (None, "", "none", "fail-branch", "default-value"):
            out.append(Problem(node.id, f"unknown error_strategy {strategy!r}"))
    return out
