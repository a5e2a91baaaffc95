"""Answer streaming: LLM chunks flow out through the answer (and end) nodes that reference them, as they come.

Each answer node's template is split into segments: literal text and `{{#node.var#}}` references. An answer
node starts emitting once it is bound to run (GraphState.will_run: every branch decision on its way is made,
so this works after if-else and classifier branches) and every answer node upstream of it has finished
emitting. Then it walks its segments in order: text goes out at once; a reference to a node that is
streaming (ctx.stream) passes its chunks through as they arrive; a reference to a finished node goes out
whole; a reference to a node not yet started waits. A loop round or sequential iteration round gets its
own router over its own GraphState (engine.py), so answer nodes inside stream per round; an answer
downstream of a container waits for it to finish. End nodes (workflow apps) stream
their outputs the same way, one after the other with "\n" between them, as Dify's End node does.
Not for: rendering final outputs (the answer/end nodes do that) or event shapes (events.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from athanor.workflow.graph import GraphState
from athanor.workflow.pool import TEMPLATE_REF, VariablePool, to_text


@dataclass
class _Segment:
    text: str | None = None
    selector: list[str] | None = None


@dataclass
class _Output:
    node_id: str
    segments: list[_Segment]
    upstream_outputs: set[str] = field(default_factory=set)  # answer nodes and containers to wait for
    ancestors: set[str] = field(default_factory=set)
    cursor: int = 0
    sent: int = 0  # characters of the current reference segment already emitted
    finished: bool = False


def answer_segments(template: str) -> list[_Segment]:
    segments, pos = [], 0
    for m in TEMPLATE_REF.finditer(template or ""):
        if m.start() > pos:
            segments.append(_Segment(text=template[pos:m.start()]))
        segments.append(_Segment(selector=m.group(1).split(".")))
        pos = m.end()
    if pos < len(template or ""):
        segments.append(_Segment(text=template[pos:]))
    return segments


def end_segments(outputs: list[dict]) -> list[_Segment]:
    refs = [_Segment(selector=list(o.get("value_selector") or [])) for o in outputs]
    segments: list[_Segment] = []
    for ref in (r for r in refs if len(r.selector) >= 2):
        segments += [_Segment(text="\n"), ref] if segments else [ref]
    return segments


class StreamRouter:
    """Routes chunks of the top-level graph to `emit(text, selector)`; all methods run under the engine lock."""

    def __init__(self, state: GraphState, pool: VariablePool, emit: Callable[[str, list | None], None]):
        self.state, self.pool, self.emit = state, pool, emit
        self.chunks: dict[tuple, list[str]] = defaultdict(list)
        graph = state.graph
        self.outputs: list[_Output] = []
        for nid, node in graph.nodes.items():
            if node.type == "answer":
                self.outputs.append(_Output(nid, answer_segments(str(node.data.get("answer", "")))))
            elif node.type == "end":
                self.outputs.append(_Output(nid, end_segments(node.data.get("outputs") or [])))
        ids = {o.node_id for o in self.outputs}
        for out in self.outputs:
            out.ancestors = graph.ancestors(out.node_id)
            # containers may hold answer nodes of their own: their text comes first
            containers = {a for a in out.ancestors if graph.nodes[a].type in ("iteration", "loop")}
            out.upstream_outputs = (out.ancestors & ids) | containers
        self.answer_text: list[str] = []

    def on_chunk(self, selector: list[str], text: str) -> None:
        self.chunks[tuple(selector[:2])].append(text)
        self.pump()

    def pump(self) -> None:
        """Emit whatever has become emittable (called after every chunk and every node state change)."""
        for out in self.outputs:
            if not out.finished:
                self._advance(out)

    def _advance(self, out: _Output) -> None:
        state = self.state
        if state.node[out.node_id] in ("skipped", "failed"):
            out.finished = True
            return
        if not state.will_run(out.node_id) or not self._upstream_done(out):
            return
        while out.cursor < len(out.segments):
            seg = out.segments[out.cursor]
            if seg.text is not None:
                self._send(out, seg.text, None)
            elif not self._reference(out, seg.selector):
                return  # waiting for a value
            out.cursor, out.sent = out.cursor + 1, 0
        out.finished = True

    def _upstream_done(self, out: _Output) -> bool:
        by_id = {o.node_id: o for o in self.outputs}
        return all((u in by_id and by_id[u].finished) or self.state.settled(u) for u in out.upstream_outputs)

    def _reference(self, out: _Output, selector: list[str]) -> bool:
        """Emit (more of) one reference; True when it is complete."""
        source = selector[0]
        streamed = "".join(self.chunks.get(tuple(selector[:2]), []))
        if source not in self.state.node:  # sys / env: fixed for the run; conversation: after upstream writes
            if source == "conversation" and not all(self.state.settled(a) for a in out.ancestors):
                return False
            self._send(out, to_text(self.pool.lookup(selector)), selector)
            return True
        node_state = self.state.node[source]
        if node_state in GraphState.DONE or node_state in ("skipped", "failed"):
            full = to_text(self.pool.lookup(selector)) if node_state in GraphState.DONE else ""
            rest = full[out.sent:] if full.startswith(streamed[:out.sent]) else ""
            self._send(out, rest, selector)
            return True
        if streamed and len(selector) == 2:  # running and streaming: pass the new part through
            self._send(out, streamed[out.sent:], selector)
        return False

    def _send(self, out: _Output, text: str, selector: list | None) -> None:
        if not text:
            return
        out.sent += len(text)
        self.answer_text.append(text)
        self.emit(text, selector)

    @property
    def answer(self) -> str:
        return "".join(self.answer_text)
