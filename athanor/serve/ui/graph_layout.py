"""A workflow's graph laid out for an SVG: nodes in columns by their longest distance from a start node.

Dify's canvas positions are ignored (exports from the DSL need not have them, and they are drawn for a wide
screen); a layered layout reads left to right on any width. Not for running graphs (workflow/engine.py).
"""

from __future__ import annotations

from dataclasses import dataclass

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 150, 44, 50, 18, 12


@dataclass
class Box:
    id: str
    title: str
    type: str
    x: int
    y: int
    status: str = ""


@dataclass
class Layout:
    boxes: list[Box]
    edges: list[tuple[int, int, int, int]]  # (x1, y1, x2, y2): right middle of source -> left middle of target
    width: int
    height: int


def _depths(ids: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Longest-path depth from the nodes without incoming edges; an edge back into a cycle is ignored."""
    depth = {i: 0 for i in ids}
    for _ in range(len(ids)):  # Bellman-Ford style relaxation, bounded: cycles stop growing after len(ids) rounds
        changed = False
        for s, t in edges:
            if s in depth and t in depth and depth[t] < depth[s] + 1 and depth[s] + 1 < len(ids):
                depth[t], changed = depth[s] + 1, True
        if not changed:
            break
    return depth


def layout(app, statuses: dict[str, str] | None = None) -> Layout:
    """`app`: a workflow.dsl.App; `statuses`: node id -> run status (succeeded, failed, ...) to colour boxes."""
    statuses = statuses or {}
    ids = list(app.nodes)
    pairs = [(e.source, e.target) for e in app.edges]
    depth = _depths(ids, pairs)
    rows: dict[int, int] = {}
    boxes: dict[str, Box] = {}
    for node_id in ids:
        col = depth[node_id]
        row = rows.get(col, 0)
        rows[col] = row + 1
        node = app.nodes[node_id]
        boxes[node_id] = Box(node_id, node.title[:22], node.type, PAD + col * (NODE_W + GAP_X),
                             PAD + row * (NODE_H + GAP_Y), statuses.get(node_id, ""))
    lines = [(boxes[s].x + NODE_W, boxes[s].y + NODE_H // 2, boxes[t].x, boxes[t].y + NODE_H // 2)
             for s, t in pairs if s in boxes and t in boxes]
    width = PAD * 2 + (max(depth.values(), default=0) + 1) * (NODE_W + GAP_X) - GAP_X
    height = PAD * 2 + max(rows.values(), default=1) * (NODE_H + GAP_Y) - GAP_Y
    return Layout(list(boxes.values()), lines, width, height)
