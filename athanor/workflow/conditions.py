"""Dify's comparison operators, shared by if-else cases, loop break conditions and list-operator filters.

`compare(actual, operator, expected)` is the whole semantics: strings and arrays for contains / start with /
in / all of ..., numbers for = ≠ > < ≥ ≤ (both sides cast to numbers), emptiness and null checks.
`evaluate(conditions, logical_operator, pool)` resolves each condition's `variable_selector` and expected
value (which may itself contain `{{#...#}}` references) and combines with and/or.
Not for: choosing edges (the if-else node does that from the result).
"""

from __future__ import annotations

from typing import Any

from athanor.workflow.errors import WorkflowNodeError

OPERATORS = ("contains", "not contains", "start with", "end with", "is", "is not", "empty", "not empty", "in",
             "not in", "all of", "=", "≠", ">", "<", "≥", "≤", "null", "not null", "exists", "not exists")
_ALIASES = {"!=": "≠", ">=": "≥", "<=": "≤", "==": "=", "start_with": "start with", "end_with": "end with",
            "not_contains": "not contains", "is_not": "is not", "not_empty": "not empty", "not_in": "not in",
            "all_of": "all of", "not_null": "not null", "not_exists": "not exists"}
UNARY = {"empty", "not empty", "null", "not null", "exists", "not exists"}


def normalize(operator: str) -> str:
    op = _ALIASES.get(str(operator).strip(), str(operator).strip())
    if op not in OPERATORS:
        raise WorkflowNodeError(f"unknown comparison operator {operator!r}")
    return op


def compare(actual: Any, operator: str, expected: Any = None) -> bool:
    op = normalize(operator)
    if op in UNARY:
        return _unary(actual, op)
    if op in ("=", "≠", ">", "<", "≥", "≤"):
        return _numeric(actual, op, expected)
    if op in ("contains", "not contains"):
        found = actual is not None and _contains(actual, expected)
        return found if op == "contains" else not found
    if op == "start with":
        return isinstance(actual, str) and actual.startswith(str(expected or ""))
    if op == "end with":
        return isinstance(actual, str) and actual.endswith(str(expected or ""))
    if op in ("is", "is not"):
        same = _same(actual, expected)
        return same if op == "is" else not same
    if op in ("in", "not in"):
        inside = actual is not None and _as_list(expected) is not None and _in(actual, _as_list(expected))
        return inside if op == "in" else not inside
    assert op == "all of"
    wanted, have = _as_list(expected) or [], actual if isinstance(actual, (list, tuple)) else None
    return have is not None and all(w in have or str(w) in map(str, have) for w in wanted)


def _unary(actual: Any, op: str) -> bool:
    if op in ("null", "not exists"):
        return actual is None
    if op in ("not null", "exists"):
        return actual is not None
    empty = actual is None or (hasattr(actual, "__len__") and len(actual) == 0)
    return empty if op == "empty" else not empty


def _numeric(actual: Any, op: str, expected: Any) -> bool:
    if actual is None:
        return op == "≠"
    a, b = _number(actual, "variable"), _number(expected, "value")
    return {"=": a == b, "≠": a != b, ">": a > b, "<": a < b, "≥": a >= b, "≤": a <= b}[op]


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        raise WorkflowNodeError(f"cannot compare {what} {value!r} as a number") from None


def _contains(actual: Any, expected: Any) -> bool:
    if isinstance(actual, str):
        return str(expected if expected is not None else "") in actual
    if isinstance(actual, (list, tuple)):
        return expected in actual or str(expected) in [str(x) for x in actual]
    if isinstance(actual, dict):
        return str(expected) in actual
    return False


def _same(actual: Any, expected: Any) -> bool:
    if isinstance(actual, bool) or isinstance(expected, bool):  # boolean variables compare with "true"/"false"
        return str(actual).lower() == str(expected).lower()
    if actual is None:
        return expected is None
    return str(actual) == str(expected if expected is not None else "")


def _as_list(expected: Any) -> list | None:
    if expected is None:
        return None
    if isinstance(expected, (list, tuple)):
        return list(expected)
    text = str(expected)
    return [p.strip() for p in text.split(",")] if "," in text else [text]


def _in(actual: Any, options: list) -> bool:
    if isinstance(actual, (list, tuple)):  # an array is "in" when every element is
        return all(a in options or str(a) in map(str, options) for a in actual)
    return actual in options or str(actual) in map(str, options)


def resolve_expected(condition: dict, pool) -> Any:
    """The expected value: a template string rendered against the pool, a selector, or a list as is."""
    value = condition.get("value")
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value) and \
            condition.get("value_type") == "variable":
        return pool.lookup(value)
    if isinstance(value, str):
        return pool.render(value)
    return value


def evaluate(conditions: list[dict], logical_operator: str, pool) -> tuple[bool, list[dict]]:
    """(combined result, per-condition details for process_data)."""
    details = []
    for cond in conditions or []:
        if (cond.get("sub_variable_condition") or {}).get("conditions"):
            raise WorkflowNodeError("conditions on file-list attributes (sub_variable_condition) are not supported")
        actual = pool.lookup(cond.get("variable_selector") or [])
        expected = resolve_expected(cond, pool)
        ok = compare(actual, cond.get("comparison_operator", "is"), expected)
        details.append({"actual_value": actual, "expected_value": expected,
                        "comparison_operator": cond.get("comparison_operator"), "result": ok})
    results = [d["result"] for d in details]
    combined = any(results) if str(logical_operator or "and").lower() == "or" else all(results)
    return combined, details


def check_conditions(conditions: Any, where: str) -> list[str]:
    """Static problems of a condition list (unknown operators, missing selectors)."""
    problems = []
    for i, cond in enumerate(conditions or []):
        if not isinstance(cond, dict):
            problems.append(f"{where} condition #{i + 1} is not a mapping")
            continue
        try:
            normalize(cond.get("comparison_operator", "is"))
        except WorkflowNodeError as e:
            problems.append(f"{where} condition #{i + 1}: {e}")
        if not cond.get("variable_selector") and "key" not in cond:
            problems.append(f"{where} condition #{i + 1} has no variable_selector")
        if (cond.get("sub_variable_condition") or {}).get("conditions"):  # never evaluated: say so, not ignore
            problems.append(f"{where} condition #{i + 1}: conditions on file-list attributes "
                            "(sub_variable_condition) are not supported")
    return problems
