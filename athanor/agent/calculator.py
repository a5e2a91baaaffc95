"""calculator: a safe arithmetic evaluator (an ast walk, never `eval`) and its tool.

Accepts numbers, + - * / // % **, unary + -, and parentheses. Names, calls, attributes, subscripts,
comparisons, strings and everything else are refused before anything runs. Sizes are bounded (input length,
exponent, result bits) so "9**9**9" is refused instead of hanging the process.
Not for: algebra, functions (sqrt, sin) or variables.
"""

from __future__ import annotations

import ast
import math
import operator

from athanor.agent.tools import FunctionTool, ToolError

MAX_EXPRESSION_CHARS = 500
MAX_EXPONENT = 10_000
MAX_RESULT_BITS = 100_000  # ~30k decimal digits

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FRIENDLY = str.maketrans({"×": "*", "÷": "/", "−": "-"})


def calculate(expression: str) -> int | float:
    """Evaluate an arithmetic expression; ToolError with a one-line reason for anything else."""
    text = expression.translate(_FRIENDLY).strip().rstrip("=").strip()
    if not text:
        raise ToolError("empty expression; give arithmetic like 17*23")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ToolError(f"not an arithmetic expression: {expression!r}; use numbers, + - * / // % ** and ()") from None
    return _eval(tree.body)


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        try:
            result = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
        except OverflowError:
            raise ToolError("result too large") from None
        return _check_size(result)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
        raise ToolError("'^' is not a power here; write ** (e.g. 2**10)")
    raise ToolError(f"not allowed in arithmetic: {type(node).__name__}; use numbers, + - * / // % ** and ()")


def _check_power(base: float, exponent: float) -> None:
    if abs(exponent) > MAX_EXPONENT:
        raise ToolError(f"exponent {exponent} too large (limit {MAX_EXPONENT})")
    is_int = isinstance(base, int) and isinstance(exponent, int)
    if is_int and exponent > 0 and abs(base).bit_length() * exponent > MAX_RESULT_BITS:
        raise ToolError("result too large")


def _check_size(value: complex) -> int | float:
    if isinstance(value, complex):
        raise ToolError("result is not a real number")
    if isinstance(value, int) and value.bit_length() > MAX_RESULT_BITS:
        raise ToolError("result too large")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("result is not finite")
    return value


def _format(value: float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _run(expression: str) -> str:
    return _format(calculate(expression))


calculator = FunctionTool(
    name="calculator",
    description="Evaluate an arithmetic expression with numbers, + - * / // % ** and parentheses, e.g. 17*23.",
    parameters={"type": "object", "properties": {"expression": {"type": "string", "examples": ["(2+3)*4"]}},
                "required": ["expression"]},
    fn=_run,
)
