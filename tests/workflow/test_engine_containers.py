"""Iteration (sequential, parallel, error modes, flatten) and loop (break conditions, loop-end, loop_count)."""

from __future__ import annotations

import threading

import pytest

from tests.workflow.conftest import chain, dify_app, edge, end, node, run_doc, start
from tests.workflow.w1_nodes import BarrierNode


def _iteration_doc(inner: list[dict], inner_edges: list[dict], output_selector: list, **data) -> dict:
    it = node("it", "iteration", iterator_selector=["start", "items"], output_selector=output_selector,
              start_node_id="it_start", **data)
    nodes = [start("items", types={"items": "json_object"}), it,
             node("it_start", "iteration-start", parent="it", isInIteration=True), *inner, end(out=["it", "output"])]
    return dify_app(nodes, [*chain("start", "it", "end"), *inner_edges])


def _divide(parent: str = "it") -> dict:
    return node("div", "template-transform", parent=parent, template="{{ 12 // x }}",
                variables=[{"variable": "x", "value_selector": [parent, "item"]}])


def test_iteration_fixture_formats_each_item(fixtures_dir):
    from athanor.workflow.dsl import load_app
    from athanor.workflow.engine import WorkflowEngine
    from tests.workflow.conftest import Recorder

    rec = Recorder()
    result = WorkflowEngine(load_app(fixtures_dir / "iteration_format_w1.yml"), None, [rec]).run({})
    assert result.outputs == {"output": ["output: 1", "output: 2", "output: 3"]}
    names = rec.names()
    assert names.count("iteration_started") == 1 and names.count("iteration_next") == 3
    assert names.count("iteration_completed") == 1
    assert [e["data"]["index"] for e in rec.of("iteration_next")] == [0, 1, 2]
    inner = [e["data"] for e in rec.of("node_finished") if e["data"]["node_id"] == "fmt"]
    assert len(inner) == 3 and all(d["iteration_id"] == "loop1" for d in inner)
    done = rec.of("iteration_completed")[0]["data"]
    assert done["outputs"] == {"output": ["output: 1", "output: 2", "output: 3"]} and done["node_id"] == "loop1"


def test_iteration_index_and_outer_variables():
    fmt = node("fmt", "template-transform", parent="it", template="{{ i }}:{{ v }}{{ s }}",
               variables=[{"variable": "i", "value_selector": ["it", "index"]},
                          {"variable": "v", "value_selector": ["it", "item"]},
                          {"variable": "s", "value_selector": ["start", "suffix"]}])
    doc = _iteration_doc([fmt], [edge("it_start", "fmt")], ["fmt", "output"])
    doc["workflow"]["graph"]["nodes"][0]["data"]["variables"].append({"variable": "suffix", "type": "text-input"})
    result, _ = run_doc(doc, {"items": '["a", "b"]', "suffix": "!"})
    assert result.outputs == {"out": ["0:a!", "1:b!"]}


def test_parallel_iteration_runs_items_concurrently_and_keeps_order():
    BarrierNode.barriers["iter3"] = threading.Barrier(3)
    wait = node("wait", "test-barrier", parent="it", barrier="iter3")
    fmt = node("fmt", "template-transform", parent="it", template="<{{ v }}>",
               variables=[{"variable": "v", "value_selector": ["it", "item"]}])
    doc = _iteration_doc([wait, fmt], [edge("it_start", "wait"), edge("wait", "fmt")], ["fmt", "output"],
                         is_parallel=True, parallel_nums=3)
    result, _ = run_doc(doc, {"items": "[3, 1, 2]"})
    assert result.status == "succeeded", result.error
    assert result.outputs == {"out": ["<3>", "<1>", "<2>"]}


@pytest.mark.parametrize("mode, status, output", [
    ("terminated", "failed", None),
    ("continue-on-error", "succeeded", ["6", None, "4"]),
    ("remove-abnormal-output", "succeeded", ["6", "4"]),
])
@pytest.mark.parametrize("parallel", [False, True])
def test_iteration_error_handle_modes(mode, status, output, parallel):
    doc = _iteration_doc([_divide()], [edge("it_start", "div")], ["div", "output"], error_handle_mode=mode,
                         is_parallel=parallel, parallel_nums=2)
    result, rec = run_doc(doc, {"items": "[2, 0, 3]"})
    assert result.status == status
    if output is None:
        assert "ZeroDivisionError" in result.error and rec.of("iteration_completed")[0]["data"]["status"] == "failed"
    else:
        assert result.outputs == {"out": output}


@pytest.mark.parametrize("flatten, expected", [(True, ["a", "a", "b", "b"]), (False, [["a", "a"], ["b", "b"]])])
def test_iteration_flatten_output(flatten, expected):
    code_like = node("dup", "variable-aggregator", parent="it", variables=[["it", "item"]])
    twice = node("twice", "template-transform", parent="it", template="{{ [v, v] | tojson }}",
                 variables=[{"variable": "v", "value_selector": ["dup", "output"]}])
    agg = node("parse", "code", parent="it", code_language="python3",
               code="import json\ndef main(t: str) -> dict:\n    return {'r': json.loads(t)}\n",
               variables=[{"variable": "t", "value_selector": ["twice", "output"]}],
               outputs={"r": {"type": "array[string]"}})
    doc = _iteration_doc([code_like, twice, agg], [*chain("it_start", "dup", "twice", "parse")], ["parse", "r"],
                         flatten_output=flatten)
    result, _ = run_doc(doc, {"items": '["a", "b"]'})
    assert result.outputs == {"out": expected}


def test_iteration_over_non_array_fails_clearly():
    doc = _iteration_doc([_divide()], [edge("it_start", "div")], ["div", "output"])
    result, _ = run_doc(doc, {"items": '{"not": "a list"}'})
    assert result.status == "failed" and "iteration needs an array, got dict" in result.error


def test_loop_fixture_breaks_at_five(fixtures_dir):
    from athanor.workflow.dsl import load_app
    from athanor.workflow.engine import WorkflowEngine
    from tests.workflow.conftest import Recorder

    rec = Recorder()
    result = WorkflowEngine(load_app(fixtures_dir / "loop_break_w1.yml"), None, [rec]).run({})
    assert result.status == "succeeded" and result.outputs == {"num": 5}
    assert rec.names().count("loop_next") == 4 and rec.names().count("loop_started") == 1
    done = rec.of("loop_completed")[0]["data"]
    assert done["outputs"]["num"] == 5 and done["outputs"]["loop_round"] == 4
    inner = [e["data"] for e in rec.of("node_finished") if e["data"]["node_id"] == "inc"]
    assert len(inner) == 4 and all(d["loop_id"] == "lp" for d in inner)


def _loop_doc(count: int, inner: list[dict], inner_edges: list[dict], conditions: list | None = None) -> dict:
    lp = node("lp", "loop", loop_count=count, logical_operator="or", break_conditions=conditions or [],
              loop_variables=[{"label": "acc", "value": "", "value_type": "constant", "var_type": "string"},
                              {"label": "seed", "value": ["start", "seed"], "value_type": "variable",
                               "var_type": "string"}],
              start_node_id="lp_start")
    nodes = [start("seed"), lp, node("lp_start", "loop-start", parent="lp"), *inner,
             end(acc=["lp", "acc"], rounds=["lp", "loop_round"])]
    return dify_app(nodes, [*chain("start", "lp", "end"), *inner_edges])


def _append_seed() -> dict:
    return node("add", "assigner", parent="lp", version="2", items=[
        {"variable_selector": ["lp", "acc"], "input_type": "variable", "operation": "over-write",
         "value": ["grow", "output"]}])


def _grow() -> dict:
    return node("grow", "template-transform", parent="lp", template="{{ acc }}{{ seed }}",
                variables=[{"variable": "acc", "value_selector": ["lp", "acc"]},
                           {"variable": "seed", "value_selector": ["lp", "seed"]}])


def test_loop_count_caps_rounds_and_variables_come_from_selectors():
    doc = _loop_doc(3, [_grow(), _append_seed()], chain("lp_start", "grow", "add"))
    result, _ = run_doc(doc, {"seed": "ab"})
    assert result.outputs == {"acc": "ababab", "rounds": 3}


def test_loop_break_condition_with_or():
    conditions = [{"variable_selector": ["lp", "acc"], "comparison_operator": "contains", "value": "xxx"},
                  {"variable_selector": ["lp", "acc"], "comparison_operator": "is", "value": "never"}]
    doc = _loop_doc(10, [_grow(), _append_seed()], chain("lp_start", "grow", "add"), conditions)
    assert run_doc(doc, {"seed": "x"})[0].outputs == {"acc": "xxx", "rounds": 3}


def test_loop_end_node_stops_the_loop():
    gate = node("gate", "if-else", parent="lp", cases=[{"case_id": "stop", "conditions": [
        {"variable_selector": ["lp", "acc"], "comparison_operator": "is", "value": "zz"}]}])
    stop = node("stop", "loop-end", parent="lp")
    doc = _loop_doc(10, [_grow(), _append_seed(), gate, stop],
                    [*chain("lp_start", "grow", "add", "gate"), edge("gate", "stop", "stop")])
    assert run_doc(doc, {"seed": "z"})[0].outputs == {"acc": "zz", "rounds": 2}
