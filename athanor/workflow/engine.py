"""The workflow engine: runs a Dify app graph with Dify's semantics, events and limits.

`WorkflowEngine(app, services).run(inputs, ...)` → RunResult. One run:
  1. check inputs against the start node, fill the variable pool (sys.*, env, conversation, inputs);
  2. execute the top-level Graph: ready nodes run concurrently on a thread pool; when one finishes, its
     outgoing edges are taken or skipped by the handle it chose (GraphState), which readies or skips the next;
  3. a failing node gets its error strategy: retries (retry_config), then fail-branch or default-value,
     else the run fails; handled failures make the run "partial-succeeded";
  4. events (events.py) go to every observer as they happen; answer text streams via StreamRouter;
  5. traced through athanor/tracing.py: a `workflow` span per run, a `node` span per node execution (nodes
     inside iterations/loops under their container's span), the model calls of a node under its span.
Iteration and loop nodes run their inside through `GraphRun.run_subgraph`, with their own GraphState; a round
that runs alone (loops, sequential iterations) gets its own StreamRouter, so answer nodes inside stream live;
rounds of a parallel iteration run side by side, and their answer nodes speak whole when they finish.
Limits: Services.max_steps node executions and Services.max_seconds wall time per run.
Not for: what a node does (nodes/), the DSL format (dsl.py), persistence (runs.py: an observer).
"""

from __future__ import annotations

import contextvars
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from athanor import tracing
from athanor.workflow import events as ev
from athanor.workflow.dsl import CONTAINER_TYPES, App
from athanor.workflow.errors import WorkflowError, WorkflowNodeError
from athanor.workflow.graph import Graph, GraphState
from athanor.workflow.nodes.base import NodeResult, RunContext
from athanor.workflow.pool import VariablePool
from athanor.workflow.streaming import StreamRouter

Observer = Callable[[dict], None]
MAX_WORKERS = 8  # concurrent nodes per graph level
# span attributes (tracing.py has no GenAI name for these): the run's and each node's
APP, RUN_ID, MODE = "athanor.workflow.app", "athanor.workflow.run_id", "athanor.workflow.mode"
STATUS, STEPS, TOKENS = "athanor.workflow.status", "athanor.workflow.total_steps", "athanor.workflow.total_tokens"
NODE_ID, NODE_TYPE, NODE_TITLE = "athanor.workflow.node_id", "athanor.workflow.node_type", "athanor.workflow.node_title"
INDEX, ELAPSED = "athanor.workflow.index", "athanor.workflow.elapsed_s"


@dataclass
class RunResult:
    run_id: str
    status: str  # succeeded | failed | partial-succeeded
    outputs: dict = field(default_factory=dict)
    error: str | None = None
    answer: str = ""
    elapsed_time: float = 0.0
    total_steps: int = 0
    total_tokens: int = 0
    exceptions_count: int = 0
    conversation: dict = field(default_factory=dict)  # conversation variables after the run
    conversation_id: str | None = None
    message_id: str | None = None


class WorkflowEngine:
    """Runs one App; reusable for many runs (each run gets its own pool, state and ids)."""

    def __init__(self, app: App, services=None, observers: list[Observer] | None = None):
        from athanor.workflow.services import Services
        from athanor.workflow.validate import structural_problems

        self.app, self.services = app, services or Services()
        self.observers = list(observers or [])
        problems = structural_problems(app)
        if problems:  # a graph that cannot run as drawn fails before anything runs (all problems: `validate`)
            more = f" (and {len(problems) - 1} more; run `athanor workflow validate`)" if len(problems) > 1 else ""
            raise WorkflowError(f"node {problems[0]}{more}" if problems[0].node_id else f"{problems[0]}{more}")
        # every level built once, up front: parallel iterations read them from many threads
        containers = [n.id for n in app.nodes.values() if n.type in CONTAINER_TYPES]
        self._graphs: dict[str | None, Graph] = {c: Graph(app, c) for c in [None, *containers]}

    def graph(self, container_id: str | None) -> Graph:
        return self._graphs[container_id]

    def run(self, inputs: dict | None = None, *, query: str = "", files: list | None = None, user: str = "user",
            conversation_id: str | None = None, conversation: dict | None = None, dialogue_count: int = 1,
            environment: dict | None = None, run_id: str | None = None,
            history: list[dict] | None = None) -> RunResult:
        """One run. Advanced-chat turns pass the conversation so far: `conversation` (its variables) and
        `history` (earlier turns as {"role": "user" | "assistant", "content"} messages, oldest first), which
        llm / classifier / extractor / agent nodes with `memory` read from `sys.history`."""
        from athanor.workflow.nodes.basic import coerce_start_inputs

        graph = self.graph(None)
        start = graph.nodes[graph.roots[0]]
        inputs = coerce_start_inputs(start.data, dict(inputs or {}))  # bad input: WorkflowError before the run
        chat = self.app.runs_as == "advanced-chat"
        if chat and not str(query).strip():
            raise WorkflowError(f"{self.app.mode} apps need a query (sys.query: -q on the command line)")
        ids = ev.RunIds(run_id or str(uuid.uuid4()), str(uuid.uuid4()), self.app.name or "workflow",
                        self.app.runs_as,
                        conversation_id=(conversation_id or str(uuid.uuid4())) if chat else None,
                        message_id=str(uuid.uuid4()) if chat else None)
        system = {"query": query, "files": list(files or []), "conversation_id": ids.conversation_id or "",
                  "user_id": user, "workflow_run_id": ids.run_id, "dialogue_count": dialogue_count,
                  "app_id": self.app.name, "workflow_id": ids.workflow_id, "timestamp": int(time.time()),
                  "history": [dict(m) for m in history or [] if isinstance(m, dict)]}
        conv = {**self.app.conversation_defaults(), **(conversation or {})}
        pool = VariablePool(system, {**self.app.environment(), **(environment or {})}, conv)
        return _Run(self, ids, pool, inputs).execute()


class _Run:
    """State of one run: counters, the lock, event fan-out, the top-level GraphRun."""

    def __init__(self, engine: WorkflowEngine, ids: ev.RunIds, pool: VariablePool, inputs: dict):
        self.engine, self.ids, self.pool, self.inputs = engine, ids, pool, inputs
        self.services = engine.services
        self.lock = threading.RLock()
        self.steps = self.index = self.tokens = self.exceptions = 0
        self.started = time.monotonic()
        self.deadline = self.started + float(self.services.max_seconds)
        self.router: StreamRouter | None = None

    def emit(self, event: dict) -> None:
        with self.lock:
            for observe in self.engine.observers:
                observe(event)

    def emit_text(self, text: str, selector: list | None) -> None:
        self.emit(ev.text(self.ids, text, selector))

    def emit_inner_text(self, text: str, selector: list | None) -> None:
        """Text from an answer node inside an iteration/loop: part of the run's answer, out at once."""
        with self.lock:
            if text and self.router is not None:
                self.router.answer_text.append(text)
            if text:
                self.emit_text(text, selector)

    def next_step(self) -> int:
        with self.lock:
            self.steps += 1
            self.index += 1
            if self.steps > self.services.max_steps:
                raise WorkflowNodeError(f"the run exceeded {self.services.max_steps} steps")
            return self.index

    def execute(self) -> RunResult:
        """The run inside one `workflow` span (the parent of every top-level node span)."""
        with tracing.span(f"workflow {self.ids.workflow_id}", "workflow", **{
                RUN_ID: self.ids.run_id, APP: self.ids.workflow_id, MODE: self.ids.mode}) as span:
            span.set_content(input=self.inputs)
            result = self._execute(span)
            span.update({STATUS: result.status, STEPS: result.total_steps, TOKENS: result.total_tokens})
            span.set_content(output=result.outputs)
            if result.status == "failed":
                span.fail(result.error or "failed")
        return result

    def _execute(self, span: tracing.Span) -> RunResult:
        self.emit(ev.workflow_started(self.ids, self.inputs))
        self.pool.set_outputs("__inputs__", self.inputs)
        top = GraphRun(self, self.engine.graph(None), self.pool, span=span)
        self.router = top.router = StreamRouter(top.state, self.pool, self.emit_text)
        error = None
        try:
            top.execute()
        except WorkflowNodeError as e:
            error = str(e)
        result = self._result(top, error)
        if self.ids.mode == "advanced-chat" and result.status != "failed":
            self.emit(ev.message_end(self.ids, self.tokens))
        self.emit(ev.workflow_finished(self.ids, result.status, result.outputs, error, result.elapsed_time,
                                       self.tokens, self.steps, self.exceptions))
        return result

    def _result(self, top: GraphRun, error: str | None) -> RunResult:
        status = "failed" if error else ("partial-succeeded" if self.exceptions else "succeeded")
        answer = self.router.answer if self.router else ""
        outputs: dict = {}
        for nid, node in top.graph.nodes.items():
            if node.type == "end" and top.state.node[nid] in GraphState.DONE:
                outputs.update(self.pool.node_values(nid))
        if self.ids.mode == "advanced-chat":
            outputs = {"answer": answer, **outputs}
        return RunResult(self.ids.run_id, status, outputs if not error else {}, error, answer,
                         round(time.monotonic() - self.started, 6), self.steps, self.tokens, self.exceptions,
                         dict(self.pool.conversation), self.ids.conversation_id, self.ids.message_id)


class GraphRun:
    """One execution of one Graph level against one pool (the top level, or one iteration/loop round)."""

    def __init__(self, run: _Run, graph: Graph, pool: VariablePool, scope: dict | None = None,
                 span: tracing.Span | None = None):
        self.run, self.graph, self.pool = run, graph, pool
        self.span = span  # parent of this level's node spans: the workflow's, or the container node's
        self.node_spans: dict[str, tracing.Span] = {}  # this level's node spans (containers parent their rounds)
        self.scope = dict(scope or {})  # {"iteration_id" | "loop_id": id, "index": n} inside containers
        self.state = GraphState(graph)
        self.router: StreamRouter | None = None
        self.stopped = False  # a loop-end node ran: the loop stops after this round
        self.alone = True  # no sibling round runs beside this one (False inside parallel iterations)

    # --- the main loop ----------------------------------------------------------------------------------

    def execute(self) -> None:
        """Run until no node is ready or running; raise WorkflowNodeError for an unhandled failure."""
        failure: str | None = None
        ready = list(self.graph.roots)
        for nid in ready:
            self.state.node[nid] = "queued"
        pool = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="wf-node")
        running: dict = {}
        try:
            while (ready and failure is None) or running:
                while ready and failure is None:
                    nid = ready.pop(0)
                    with self.run.lock:
                        self.state.node[nid] = "running"
                    # each node runs in the caller's context (its request id reaches the model calls it makes)
                    running[pool.submit(contextvars.copy_context().run, self._run_node, nid)] = nid
                remaining = self.run.deadline - time.monotonic()
                done, _ = wait(list(running), timeout=max(remaining, 0), return_when=FIRST_COMPLETED)
                if not done:
                    failure = failure or f"the run exceeded its time limit of {self.run.services.max_seconds:g} s"
                    break
                for fut in done:
                    nid = running.pop(fut)
                    status, handle, error = fut.result()
                    with self.run.lock:
                        self.state.node[nid] = status
                        if status == "failed":
                            failure = failure or error
                        else:
                            ready.extend(self.state.decide(nid, handle))
                        if self.router:
                            self.router.pump()
        finally:
            pool.shutdown(wait=failure is None, cancel_futures=True)
        if failure is not None:
            raise WorkflowNodeError(failure)

    def run_subgraph(self, container_id: str, pool: VariablePool, scope: dict, *, parallel: bool = False) -> GraphRun:
        """Run the inside of a container once (one iteration or loop round); returns the finished GraphRun.

        parallel: other rounds run at the same time, so this round's answer text cannot stream in order."""
        # the container's span is handed over explicitly: parallel rounds run in threads without its context
        sub = GraphRun(self.run, self.run.engine.graph(container_id), pool, scope,
                       span=self.node_spans.get(container_id))
        sub.alone = self.alone and not parallel
        if sub.alone and any(n.type == "answer" for n in sub.graph.nodes.values()):
            sub.router = StreamRouter(sub.state, pool, self.run.emit_inner_text)
        sub.execute()
        return sub

    def emit(self, event: dict) -> None:
        self.run.emit(event)

    @property
    def ids(self) -> ev.RunIds:
        return self.run.ids

    # --- one node ---------------------------------------------------------------------------------------

    def _run_node(self, nid: str) -> tuple[str, str, str | None]:
        """Runs in a worker thread; never raises: returns (status, handle, error)."""
        node = self.graph.nodes[nid]
        info = {"id": str(uuid.uuid4()), "node_id": nid, "node_type": node.type, "title": node.title,
                "predecessor_node_id": self.state.predecessor.get(nid), "created_at": ev.now_s(), "extras": {},
                "iteration_id": self.scope.get("iteration_id"), "loop_id": self.scope.get("loop_id")}
        try:
            info["index"] = self.run.next_step()
            if time.monotonic() > self.run.deadline:
                raise WorkflowNodeError(f"the run exceeded its time limit of {self.run.services.max_seconds:g} s")
            if self.run.services.stop.is_set():
                raise WorkflowNodeError("the run was stopped")
        except WorkflowNodeError as e:
            return "failed", "", str(e)
        with tracing.span(f"node {node.title or nid}", "node", parent=self.span, **{
                NODE_ID: nid, NODE_TYPE: node.type, NODE_TITLE: node.title, INDEX: self.scope.get("index")}) as span:
            self.node_spans[nid] = span
            status, handle, error = self._execute_node(node, info)
            span.update({STATUS: status, ELAPSED: info["elapsed_time"]})
            span.set_content(input=info["inputs"], output=info["outputs"])
            if status != "succeeded":
                span.fail(error or status)
        return status, handle, error

    def _execute_node(self, node, info: dict) -> tuple[str, str, str | None]:
        """The node's started event, its attempts, its outputs and its finished event (info gets the results)."""
        nid = node.id
        self.emit(ev.node_started(self.ids, {**info, "inputs": None}))
        started = time.monotonic()
        result, status, error = self._attempts(node, info)
        if status != "failed":
            self.pool.set_outputs(nid, result.outputs)
            if self.graph.container_id is not None and node.type == "answer" and self.router is None:
                self.run.emit_inner_text(str(result.outputs.get("answer", "")), None)  # a parallel round: whole
        with self.run.lock:
            self.run.tokens += int(result.metadata.get("total_tokens") or 0)
            self.run.exceptions += status == "exception"
        info.update(inputs=result.inputs, process_data=result.process_data, outputs=result.outputs,
                    status=status, error=error, elapsed_time=round(time.monotonic() - started, 6),
                    execution_metadata=result.metadata, finished_at=ev.now_s())
        self.emit(ev.node_finished(self.ids, info))
        return status, result.handle, error

    def _attempts(self, node, info: dict) -> tuple[NodeResult, str, str | None]:
        """Run with retries; on final failure apply the node's error strategy."""
        retry = node.data.get("retry_config") or {}
        max_retries = int(retry.get("max_retries", 0) or 0) if retry.get("retry_enabled", True) else 0
        interval = float(retry.get("retry_interval", 0) or 0) / 1000.0  # Dify gives milliseconds
        for attempt in range(max_retries + 1):
            try:
                result = node.run(self._context(node.id))
                if node.data.get("error_strategy") == "fail-branch" and result.handle == "source":
                    result.handle = "success-branch"
                return result, "succeeded", None
            except WorkflowNodeError as e:
                error, kind = str(e), type(e).__name__
            except Exception as e:  # noqa: BLE001 - a bug in a node or a library: the node fails, the run reports it
                error, kind = f"{type(e).__name__}: {e}", type(e).__name__
            if attempt < max_retries:
                self.emit(ev.node_retry(self.ids, info, attempt + 1, error))
                time.sleep(interval)
        return self._on_error(node, error, kind)

    def _on_error(self, node, error: str, kind: str) -> tuple[NodeResult, str, str | None]:
        strategy = node.data.get("error_strategy")
        base = {"error_message": error, "error_type": kind}
        if strategy == "fail-branch":
            return NodeResult(outputs=base, handle="fail-branch"), "exception", error
        if strategy == "default-value":
            values = {d["key"]: _cast_default(d.get("value"), str(d.get("type") or ""))
                      for d in node.data.get("default_value") or [] if d.get("key")}
            return NodeResult(outputs={**values, **base}), "exception", error
        return NodeResult(), "failed", f"node {node.id} ({node.title}): {error}"

    def _context(self, nid: str) -> RunContext:
        on_stream = self._on_stream if self.router is not None else None
        return RunContext(self.pool, self.run.services, nid, self.ids.run_id, on_stream=on_stream,
                          on_event=self._on_event, deadline=self.run.deadline, engine=self)

    def _on_stream(self, selector: list[str], text: str) -> None:
        with self.run.lock:
            self.router.on_chunk(selector, text)

    def _on_event(self, event: str, data: dict) -> None:
        self.emit(self.ids.envelope(event, data))


def _cast_default(value, kind: str):
    """Dify's default_value entries keep numbers and JSON as strings when typed in the editor."""
    import json

    if not isinstance(value, str):
        return value
    try:
        if kind == "number":
            number = float(value)
            return int(number) if number.is_integer() and "." not in value else number
        if kind == "object" or kind.startswith("array"):
            return json.loads(value)
    except ValueError:  # json.JSONDecodeError is a ValueError
        return value
    return value


def run_workflow(app: App, inputs: dict | None = None, services=None, observers: list[Observer] | None = None,
                 **kwargs) -> RunResult:
    """One-call form: build an engine for `app` and run it once."""
    return WorkflowEngine(app, services, observers).run(inputs, **kwargs)
