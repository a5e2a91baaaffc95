"""Data and branching nodes: if-else operators and cases, template-transform, aggregator, assigner, list-operator."""

from __future__ import annotations

import pytest

from athanor.workflow.conditions import compare
from athanor.workflow.errors import WorkflowNodeError
from tests.workflow.conftest import chain, dify_app, edge, end, node, run_doc, start


@pytest.mark.parametrize("actual, op, expected, result", [
    ("hello world", "contains", "world", True), ("hello", "contains", "x", False),
    (["a", "b"], "contains", "b", True), ("hello", "not contains", "x", True), (None, "not contains", "x", True),
    ("hello", "start with", "he", True), ("hello", "start with", "lo", False),
    ("hello", "end with", "lo", True), ("hello", "end with", "he", False),
    ("abc", "is", "abc", True), ("abc", "is", "abd", False), ("abc", "is not", "abd", True),
    (True, "is", "true", True), (False, "is", "true", False),
    ("", "empty", None, True), ([], "empty", None, True), (None, "empty", None, True), ("x", "empty", None, False),
    ("x", "not empty", None, True), ({}, "not empty", None, False),
    ("b", "in", ["a", "b"], True), ("c", "in", ["a", "b"], False), ("c", "not in", ["a", "b"], True),
    ("b", "in", "a,b", True), (["a", "b"], "all of", ["a", "b"], True), (["a"], "all of", ["a", "b"], False),
    (3, "=", "3", True), ("3.0", "=", "3", True), (3, "≠", "4", True), (5, ">", "4", True), (4, ">", "4", False),
    (3, "<", "4", True), (4, "≥", "4", True), (5, "≤", "4", False), (4, ">=", "4", True), (4, "!=", "4", False),
    (None, "null", None, True), (0, "null", None, False), (0, "not null", None, True),
    ("f", "exists", None, True), (None, "not exists", None, True),
])
def test_comparison_operators(actual, op, expected, result):
    assert compare(actual, op, expected) is result


def test_comparison_errors_are_clear():
    with pytest.raises(WorkflowNodeError, match="unknown comparison operator"):
        compare(1, "roughly", 2)
    with pytest.raises(WorkflowNodeError, match="as a number"):
        compare("abc", ">", "1")


def _ifelse_doc(cases=None, **data):
    if cases is not None:
        data["cases"] = cases
    nodes = [start("a", "b"), node("gate", "if-else", **data),
             *[node(f"t_{h}", "template-transform", template=h, variables=[]) for h in ("c1", "c2", "false", "true")],
             node("agg", "variable-aggregator", variables=[[f"t_{h}", "output"] for h in ("c1", "c2", "false", "true")]),
             end(branch=["agg", "output"])]
    edges = [edge("start", "gate"), *[edge("gate", f"t_{h}", h) for h in ("c1", "c2", "false", "true")],
             *[edge(f"t_{h}", "agg") for h in ("c1", "c2", "false", "true")], edge("agg", "end")]
    return dify_app(nodes, edges)


def test_if_else_cases_pick_the_first_true_case_with_and_or():
    cond = lambda var, op, value: {"variable_selector": ["start", var], "comparison_operator": op, "value": value}
    cases = [{"case_id": "c1", "logical_operator": "and", "conditions": [cond("a", "is", "x"), cond("b", "is", "y")]},
             {"case_id": "c2", "logical_operator": "or", "conditions": [cond("a", "is", "x"), cond("b", "is", "y")]}]
    doc = _ifelse_doc(cases)
    assert run_doc(doc, {"a": "x", "b": "y"})[0].outputs == {"branch": "c1"}
    assert run_doc(doc, {"a": "x", "b": "n"})[0].outputs == {"branch": "c2"}
    assert run_doc(doc, {"a": "n", "b": "y"})[0].outputs == {"branch": "c2"}
    assert run_doc(doc, {"a": "n", "b": "n"})[0].outputs == {"branch": "false"}


def test_if_else_old_single_condition_form():
    doc = _ifelse_doc(logical_operator="and", conditions=[
        {"variable_selector": ["start", "a"], "comparison_operator": "contains", "value": "{{#start.b#}}"}])
    assert run_doc(doc, {"a": "haystack", "b": "st"})[0].outputs == {"branch": "true"}
    assert run_doc(doc, {"a": "haystack", "b": "zz"})[0].outputs == {"branch": "false"}


def test_file_list_sub_conditions_are_refused_not_ignored():
    from athanor.workflow.validate import validate_app
    from tests.workflow.conftest import load

    sub = {"case_id": "s", "logical_operator": "and", "conditions": [
        {"key": "extension", "comparison_operator": "is", "value": ".pdf"}]}
    doc = _ifelse_doc([{"case_id": "c1", "logical_operator": "and", "conditions": [
        {"variable_selector": ["start", "a"], "comparison_operator": "contains", "sub_variable_condition": sub}]}])
    assert [str(p) for p in validate_app(load(doc))] == [
        "gate: case c1 condition #1: conditions on file-list attributes (sub_variable_condition) are not supported"]
    result, _ = run_doc(doc, {"a": "x"})
    assert result.status == "failed" and "sub_variable_condition" in result.error


def test_template_transform_jinja_and_sandbox():
    tmpl = node("t", "template-transform", template="{% for x in items %}[{{ x | upper }}]{% endfor %} {{ n * 2 }}",
                variables=[{"variable": "items", "value_selector": ["start", "items"]},
                           {"variable": "n", "value_selector": ["start", "n"]}])
    doc = dify_app([start("items", "n", types={"items": "json_object", "n": "number"}), tmpl, end(o=["t", "output"])],
                   chain("start", "t", "end"))
    assert run_doc(doc, {"items": '["a", "b"]', "n": "21"})[0].outputs == {"o": "[A][B] 42"}
    evil = node("t", "template-transform", variables=[],
                template="{{ ''.__class__.__mro__[1].__subclasses__() }}")
    result, _ = run_doc(dify_app([start(), evil, end(o=["t", "output"])], chain("start", "t", "end")))
    assert result.status == "failed" and "sandbox" in result.error


def test_dual_switch_aggregator_fixture(fixtures_dir):
    from athanor.workflow.dsl import load_app
    from athanor.workflow.engine import run_workflow

    app = load_app(fixtures_dir / "dual_switch_aggregator_w1.yml")
    for s1, s2 in [(1, 0), (0, 1), (1, 1), (0, 0)]:
        out = run_workflow(app, {"switch1": s1, "switch2": s2}).outputs
        assert out == {"group1": f"switch 1 {'on' if s1 else 'off'}", "group2": f"switch 2 {'on' if s2 else 'off'}"}


def _assign_doc(assigner: dict, conversation: list) -> dict:
    nodes = [start("v", types={"v": "number"}), assigner, node("ans", "answer", answer="{{#conversation.x#}}")]
    return dify_app(nodes, chain("start", "w", "ans"), mode="advanced-chat", conversation=conversation)


@pytest.mark.parametrize("mode, initial, expected", [
    ("over-write", [1], 5), ("append", [1], [1, 5]), ("clear", [1, 2], []), ("clear", "text", "")])
def test_assigner_v1(mode, initial, expected):
    w = node("w", "assigner", assigned_variable_selector=["conversation", "x"], input_variable_selector=["start", "v"],
             write_mode=mode)
    result, _ = run_doc(_assign_doc(w, [{"name": "x", "value": initial, "value_type": "array[number]"}]),
                        {"v": "5"}, query="q")
    assert result.conversation["x"] == expected


@pytest.mark.parametrize("op, initial, value, expected", [
    ("over-write", 1, 7, 7), ("+=", 10, 5, 15), ("-=", 10, 5, 5), ("*=", 10, 5, 50), ("/=", 10, 4, 2.5),
    ("append", [1], 5, [1, 5]), ("extend", [1], [2, 3], [1, 2, 3]), ("remove-first", [1, 2, 3], None, [2, 3]),
    ("remove-last", [1, 2, 3], None, [1, 2]), ("clear", [1], None, []), ("set", "a", "b", "b")])
def test_assigner_v2_operations(op, initial, value, expected):
    w = node("w", "assigner", version="2", items=[{"variable_selector": ["conversation", "x"], "operation": op,
                                                    "input_type": "constant", "value": value}])
    result, _ = run_doc(_assign_doc(w, [{"name": "x", "value": initial, "value_type": "number"}]), {"v": 1},
                        query="q")
    assert result.conversation["x"] == expected


def test_legacy_variable_assigner_type_and_errors():
    w = node("w", "variable-assigner", assigned_variable_selector=["conversation", "x"],
             input_variable_selector=["start", "v"], write_mode="append")
    result, _ = run_doc(_assign_doc(w, [{"name": "x", "value": [], "value_type": "array[number]"}]), {"v": 2},
                        query="q")
    assert result.conversation["x"] == [2]
    w = node("w", "assigner", version="2", items=[{"variable_selector": ["conversation", "x"], "operation": "append",
                                                    "input_type": "constant", "value": 1}])
    result, _ = run_doc(_assign_doc(w, [{"name": "x", "value": "text", "value_type": "string"}]), {"v": 1},
                        query="q")
    assert result.status == "failed" and "append needs an array" in result.error


def test_list_operator_filter_extract_order_limit():
    records = [{"name": "b", "n": 2}, {"name": "a", "n": 9}, {"name": "c", "n": 5}, {"name": "d", "n": 1}]
    lo = node("lo", "list-operator", variable=["src", "items"],
              filter_by={"enabled": True, "conditions": [{"key": "n", "comparison_operator": ">", "value": "1"}]},
              order_by={"enabled": True, "key": "n", "value": "desc"}, limit={"enabled": True, "size": 2},
              extract_by={"enabled": False, "serial": "1"})
    src = node("src", "code", code_language="python3", variables=[], outputs={"items": {"type": "array[object]"}},
               code=f"def main() -> dict:\n    return {{'items': {records!r}}}\n")
    doc = dify_app([start(), src, lo, end(r=["lo", "result"], f=["lo", "first_record"], l=["lo", "last_record"])],
                   chain("start", "src", "lo", "end"))
    out = run_doc(doc)[0].outputs
    assert out["r"] == [{"name": "a", "n": 9}, {"name": "c", "n": 5}]
    assert out["f"] == {"name": "a", "n": 9} and out["l"] == {"name": "c", "n": 5}
    lo["data"].update(filter_by={"enabled": False}, order_by={"enabled": False}, limit={"enabled": False},
                      extract_by={"enabled": True, "serial": "3"})
    assert run_doc(doc)[0].outputs["r"] == [{"name": "c", "n": 5}]
    strings = node("lo", "list-operator", variable=["start", "words"],
                   filter_by={"enabled": True, "conditions": [{"key": "", "comparison_operator": "start with",
                                                               "value": "a"}]},
                   order_by={"enabled": True, "key": "", "value": "asc"})
    doc = dify_app([start("words", types={"words": "json_object"}), strings, end(r=["lo", "result"])],
                   chain("start", "lo", "end"))
    assert run_doc(doc, {"words": '["ax", "b", "aa"]'})[0].outputs == {"r": ["aa", "ax"]}
