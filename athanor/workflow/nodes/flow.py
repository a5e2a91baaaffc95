"""Control-flow nodes: if-else (branching by case id), iteration and loop (containers), and their markers.

if-else evaluates its cases in order and takes the first true case's id as sourceHandle, else "false";
the old single-condition form (data.conditions + logical_operator) takes "true" / "false".
iteration runs its inside once per item of an array (sequentially or `parallel_nums` at a time), each round
in a child pool where [iteration_id, item] and [iteration_id, index] are set, and collects
[output_selector] into `output`. loop runs its inside up to `loop_count` times over loop variables kept at
[loop_id, name], stopping when the break conditions hold or a loop-end node runs.
Not for: edge semantics (graph.py) or the comparison operators (conditions.py).
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from athanor.workflow import events as ev
from athanor.workflow.conditions import check_conditions, evaluate
from athanor.workflow.errors import WorkflowNodeError
from athanor.workflow.nodes.base import Node, NodeResult, RunContext, register
from athanor.workflow.nodes.basic import AssignerNode, VariableAggregatorNode


@register
class IfElseNode(Node):
    type = "if-else"

    def cases(self) -> list[dict]:
        if self.data.get("cases") is not None:
            return [{"case_id": c.get("case_id") or c.get("id"), **c} for c in self.data["cases"] or []]
        return [{"case_id": "true", "conditions": self.data.get("conditions") or [],
                 "logical_operator": self.data.get("logical_operator", "and")}]

    def check(self, app) -> list[str]:
        problems = []
        for i, case in enumerate(self.cases()):
            problems += check_conditions(case.get("conditions"), f"case {case.get('case_id') or i + 1}")
        return problems

    def run(self, ctx: RunContext) -> NodeResult:
        details = []
        for case in self.cases():
            ok, checked = evaluate(case.get("conditions") or [], case.get("logical_operator", "and"), ctx.pool)
            details.append({"case_id": case["case_id"], "result": ok, "conditions": checked})
            if ok:
                return NodeResult(outputs={"result": True, "selected_case_id": case["case_id"]},
                                  handle=str(case["case_id"]), process_data={"condition_results": details})
        return NodeResult(outputs={"result": False, "selected_case_id": "false"}, handle="false",
                          process_data={"condition_results": details})


@register
class IterationStartNode(Node):
    type = "iteration-start"

    def run(self, ctx: RunContext) -> NodeResult:
        return NodeResult()


@register
class LoopStartNode(Node):
    type = "loop-start"

    def run(self, ctx: RunContext) -> NodeResult:
        return NodeResult()


@register
class LoopEndNode(Node):
    type = "loop-end"

    def run(self, ctx: RunContext) -> NodeResult:
        ctx.engine.stopped = True
        return NodeResult()


@register
class LegacyVariableAssignerNode(Node):
    """Dify's old "variable-assigner" type: an aggregator in old exports, a v1 assigner when it names a target."""

    type = "variable-assigner"

    def _impl(self) -> Node:
        writes = "assigned_variable_selector" in self.data or "items" in self.data
        return (AssignerNode if writes else VariableAggregatorNode)(self.id, self.data)

    def check(self, app) -> list[str]:
        return self._impl().check(app)

    def run(self, ctx: RunContext) -> NodeResult:
        return self._impl().run(ctx)


def _flatten(outputs: list) -> list:
    if outputs and all(isinstance(o, list) for o in outputs):
        return [x for o in outputs for x in o]
    return outputs


@register
class IterationNode(Node):
    type = "iteration"
    MODES = ("terminated", "continue-on-error", "remove-abnormal-output")

    def check(self, app) -> list[str]:
        problems = []
        if not self.data.get("iterator_selector"):
            problems.append("no iterator_selector")
        if not self.data.get("output_selector"):
            problems.append("no output_selector")
        if self.data.get("error_handle_mode", "terminated") not in self.MODES:
            problems.append(f"unknown error_handle_mode {self.data.get('error_handle_mode')!r}")
        return problems

    def run(self, ctx: RunContext) -> NodeResult:
        items = ctx.pool.lookup(self.data.get("iterator_selector") or [])
        if items is None:
            items = []
        if not isinstance(items, list):
            raise WorkflowNodeError(f"iteration needs an array, got {type(items).__name__}")
        graph_run, exec_id, started = ctx.engine, str(uuid.uuid4()), time.monotonic()
        graph_run.emit(ev.container(graph_run.ids, "iteration", "started", self, execution_id=exec_id,
                                    inputs={"iterator_selector": items}, metadata={"iterator_length": len(items)}))
        mode = self.data.get("error_handle_mode", "terminated")
        parallel = bool(self.data.get("is_parallel")) and len(items) > 1
        workers = max(1, int(self.data.get("parallel_nums", 10) or 1)) if parallel else 1
        try:
            if workers > 1:
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wf-iter") as tp:
                    results = list(tp.map(lambda p: self._round(ctx, exec_id, *p, parallel=True), enumerate(items)))
            else:
                results = [self._round(ctx, exec_id, i, item) for i, item in enumerate(items)]
        except WorkflowNodeError as e:
            self._completed(graph_run, exec_id, started, None, str(e))
            raise
        outputs = [r for ok, r in results if ok or mode == "continue-on-error"]
        if self.data.get("flatten_output", True):
            outputs = _flatten(outputs)
        self._completed(graph_run, exec_id, started, outputs, None)
        return NodeResult(outputs={"output": outputs}, inputs={"iterator_selector": items},
                          metadata={"iterator_length": len(items)})

    def _round(self, ctx: RunContext, exec_id: str, index: int, item: Any, parallel: bool = False) -> tuple[bool, Any]:
        ctx.check_deadline()
        pool = ctx.pool.child()
        pool.set(self.id, "item", item)
        pool.set(self.id, "index", index)
        graph_run = ctx.engine
        graph_run.emit(ev.container(graph_run.ids, "iteration", "next", self, execution_id=exec_id, index=index))
        try:
            graph_run.run_subgraph(self.id, pool, {"iteration_id": self.id, "index": index}, parallel=parallel)
        except WorkflowNodeError:
            if self.data.get("error_handle_mode", "terminated") == "terminated":
                raise
            return False, None
        return True, pool.lookup(self.data.get("output_selector") or [])

    def _completed(self, graph_run, exec_id, started, outputs, error) -> None:
        graph_run.emit(ev.container(graph_run.ids, "iteration", "completed", self, execution_id=exec_id,
                                    outputs={"output": outputs}, status="failed" if error else "succeeded",
                                    error=error, elapsed_time=round(time.monotonic() - started, 6)))


@register
class LoopNode(Node):
    type = "loop"

    def check(self, app) -> list[str]:
        problems = check_conditions(self.data.get("break_conditions"), "break")
        try:
            if int(self.data.get("loop_count", 1)) < 0:
                problems.append("loop_count must not be negative")
        except (TypeError, ValueError):
            problems.append(f"loop_count {self.data.get('loop_count')!r} is not a number")
        return problems

    def run(self, ctx: RunContext) -> NodeResult:
        graph_run, exec_id, started = ctx.engine, str(uuid.uuid4()), time.monotonic()
        for var in self.data.get("loop_variables") or []:
            ctx.pool.set(self.id, var.get("label"), self._initial(ctx, var))
        graph_run.emit(ev.container(graph_run.ids, "loop", "started", self, execution_id=exec_id,
                                    inputs=self._values(ctx)))
        conditions, logic = self.data.get("break_conditions") or [], self.data.get("logical_operator", "and")
        rounds = 0
        try:
            stop = bool(conditions) and evaluate(conditions, logic, ctx.pool)[0]
            while not stop and rounds < int(self.data.get("loop_count", 1)):
                ctx.check_deadline()
                graph_run.emit(ev.container(graph_run.ids, "loop", "next", self, execution_id=exec_id,
                                            index=rounds))
                inner = graph_run.run_subgraph(self.id, ctx.pool, {"loop_id": self.id, "index": rounds})
                rounds += 1
                stop = inner.stopped or (bool(conditions) and evaluate(conditions, logic, ctx.pool)[0])
        except WorkflowNodeError as e:
            graph_run.emit(ev.container(graph_run.ids, "loop", "completed", self, execution_id=exec_id,
                                        status="failed", error=str(e), outputs=None))
            raise
        outputs = {**self._values(ctx), "loop_round": rounds}
        graph_run.emit(ev.container(graph_run.ids, "loop", "completed", self, execution_id=exec_id,
                                    outputs=outputs, status="succeeded", error=None, steps=rounds,
                                    elapsed_time=round(time.monotonic() - started, 6)))
        return NodeResult(outputs=outputs, metadata={"loop_round": rounds})

    def _values(self, ctx: RunContext) -> dict:
        return {v.get("label"): ctx.pool.lookup([self.id, v.get("label")]) for v in self.data.get("loop_variables") or []}

    def _initial(self, ctx: RunContext, var: dict) -> Any:
        value = var.get("value")
        if var.get("value_type") == "variable":
            return ctx.pool.lookup(value or [])
        kind = str(var.get("var_type", "string"))
        if kind == "number" and isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise WorkflowNodeError(f"loop variable {var.get('label')!r}: {value!r} is not a number") from None
            return int(number) if number.is_integer() else number
        if kind == "boolean" and isinstance(value, str):
            return value.strip().lower() == "true"
        if (kind.startswith("array") or kind == "object") and isinstance(value, str):
            import json

            try:
                return json.loads(value) if value.strip() else ([] if kind.startswith("array") else {})
            except json.JSONDecodeError:
                raise WorkflowNodeError(f"loop variable {var.get('label')!r} is not valid JSON") from None
        return value
