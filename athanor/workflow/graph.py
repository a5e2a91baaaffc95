"""One level of a workflow graph (the top level, or the inside of an iteration/loop) and its run state.

`Graph` holds the node objects and edges of one level. `GraphState` is Dify's edge semantics for one
execution of it: an edge is undecided, taken or skipped; a node becomes ready when none of its incoming
edges is undecided and at least one is taken; a node whose incoming edges are all skipped is skipped, and
its outgoing edges with it (skips propagate, so joins wait only for branches that can still run).
Not for: running nodes or threads (engine.py).
"""

from __future__ import annotations

from collections import defaultdict

from athanor.workflow.dsl import App, EdgeSpec
from athanor.workflow.errors import WorkflowError
from athanor.workflow.nodes.base import NODE_TYPES, Node

BRANCHING_TYPES = {"if-else", "question-classifier"}  # nodes whose sourceHandle is not always "source"
START_TYPES = {"start", "iteration-start", "loop-start"}


class Graph:
    """Nodes and edges directly inside `container_id` (None: top level), with the root to start from."""

    def __init__(self, app: App, container_id: str | None = None):
        self.container_id = container_id
        self.nodes: dict[str, Node] = {}
        for spec in app.children(container_id):
            cls = NODE_TYPES.get(spec.type)
            if cls is None:
                raise WorkflowError(f"node {spec.id}: unknown node type {spec.type!r}")
            self.nodes[spec.id] = cls(spec.id, spec.data)
        self.edges: list[EdgeSpec] = [e for e in app.edges if e.source in self.nodes and e.target in self.nodes]
        self.incoming: dict[str, list[EdgeSpec]] = defaultdict(list)
        self.outgoing: dict[str, list[EdgeSpec]] = defaultdict(list)
        for e in self.edges:
            self.incoming[e.target].append(e)
            self.outgoing[e.source].append(e)
        self.roots = self._roots(app)

    def _roots(self, app: App) -> list[str]:
        if self.container_id is None:
            roots = [nid for nid, n in self.nodes.items() if n.type == "start"]
            if not roots:
                raise WorkflowError("the workflow has no start node")
            return roots[:1]
        start = str(app.nodes[self.container_id].data.get("start_node_id") or "")
        if start in self.nodes:
            return [start]
        starts = [nid for nid, n in self.nodes.items() if n.type in START_TYPES]
        return starts[:1] or [nid for nid in self.nodes if not self.incoming[nid]]

    def is_branching(self, node_id: str) -> bool:
        node = self.nodes[node_id]
        return node.type in BRANCHING_TYPES or node.data.get("error_strategy") == "fail-branch"

    def ancestors(self, node_id: str) -> set[str]:
        seen, stack = set(), [node_id]
        while stack:
            for e in self.incoming[stack.pop()]:
                if e.source not in seen:
                    seen.add(e.source)
                    stack.append(e.source)
        return seen


def handle_matches(edge_handle: str, taken: str) -> bool:
    # A node with the fail-branch strategy takes "success-branch"; older exports keep "source" on that edge.
    return edge_handle == taken or (taken == "success-branch" and edge_handle == "source")


class GraphState:
    """Edge and node states of one execution of a Graph. Not thread-safe: the engine holds its lock."""

    DONE = ("succeeded", "exception")

    def __init__(self, graph: Graph):
        self.graph = graph
        self.edge: dict[str, str] = {e.id: "" for e in graph.edges}  # "" | "taken" | "skipped"
        self.node: dict[str, str] = {nid: "waiting" for nid in graph.nodes}
        self.predecessor: dict[str, str] = {}

    def decide(self, node_id: str, handle: str) -> list[str]:
        """Mark node_id's outgoing edges by the handle it took; return the nodes that became ready."""
        ready: list[str] = []
        for e in self.graph.outgoing[node_id]:
            self.edge[e.id] = "taken" if handle_matches(e.source_handle, handle) else "skipped"
            if self.edge[e.id] == "taken":
                self.predecessor.setdefault(e.target, node_id)
        for e in self.graph.outgoing[node_id]:
            self._visit(e.target, ready)
        return ready

    def _visit(self, node_id: str, ready: list[str]) -> None:
        if self.node[node_id] != "waiting":
            return
        states = [self.edge[e.id] for e in self.graph.incoming[node_id]]
        if "" in states:
            return  # a join still waiting for a branch that may run
        if "taken" in states:
            self.node[node_id] = "queued"
            ready.append(node_id)
            return
        self.node[node_id] = "skipped"
        for e in self.graph.outgoing[node_id]:
            self.edge[e.id] = "skipped"
        for e in self.graph.outgoing[node_id]:
            self._visit(e.target, ready)

    def will_run(self, node_id: str, _seen: set | None = None) -> bool:
        """True when node_id is bound to run: queued/running/done, or reached by a taken edge, or by the
        plain "source" edge of a node that is itself bound to run and cannot branch away."""
        state = self.node.get(node_id)
        if state in ("queued", "running", *self.DONE):
            return True
        if state != "waiting":
            return False
        seen = _seen if _seen is not None else set()
        if node_id in seen:
            return False
        seen.add(node_id)
        for e in self.graph.incoming[node_id]:
            if self.edge[e.id] == "taken":
                return True
            if self.edge[e.id] == "" and e.source_handle == "source" and not self.graph.is_branching(e.source) \
                    and self.will_run(e.source, seen):
                return True
        return False

    def settled(self, node_id: str) -> bool:
        return self.node.get(node_id) in (*self.DONE, "skipped", "failed")
