"""Go values for the Go template executor: formatting (fmt's %v), Go's json.Marshal, truthiness, builtins.

Data is plain Python (dict = Go map[string]any: a missing key is nil and prints "<no value>"; list = slice;
str/int/float/bool/None) plus `GoStruct` for Ollama's api types, whose fields must exist and whose JSON uses the
Go field order and tags. Truthiness, `eq`/`lt`..., `len`, `index`, `slice`, `print`/`printf` and Ollama's `json`
(Go's json.Marshal: sorted map keys, `<>&` escaped) follow Go. Not for: methods, channels, custom functions.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


class Fail(Exception):
    """An execution error without a position yet; the caller adds the node's `line:col`."""


@dataclass
class GoStruct:
    """A Go struct value: `fields` by Go name (in declaration order); `json` as (Go name, JSON name, omitempty)."""
    type_name: str
    fields: dict[str, Any]
    json: list[tuple[str, str, bool]]
    stringer: bool = False  # the Go type has String() = its JSON (api.Tool, api.ToolFunction)


class JsonMap(dict):
    """A Go map type whose String() is its JSON (api.ToolCallFunctionArguments)."""


class JsonList(list):
    """A Go slice type whose String() is its JSON (api.Tools); `is_nil` for a nil slice (JSON null)."""
    is_nil = False


# ---- Go formatting -------------------------------------------------------------------------------------------------

def _float_digits(f: float) -> tuple[str, int]:
    """Shortest round-trip digits of |f| and its decimal exponent (d.ddd x 10^exp)."""
    d = Decimal(repr(abs(f))).normalize()
    _, digits, exp = d.as_tuple()
    s = "".join(map(str, digits))
    return s, len(s) - 1 + exp


def _float_e(f: float, min_exp_digits: int = 2) -> str:
    s, exp = _float_digits(f)
    mant = s[0] + ("." + s[1:] if len(s) > 1 else "")
    sign = "-" if exp < 0 else "+"
    return f"{'-' if f < 0 else ''}{mant}e{sign}{abs(exp):0{min_exp_digits}d}"


def _float_f(f: float) -> str:
    text = format(Decimal(repr(f)).normalize(), "f")
    return text.removesuffix(".0")


def go_float(f: float) -> str:
    """fmt's %v for a float64 (strconv 'g', shortest): 1e+06, 123456, 0.0001, 1e-05."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "0"
    _, exp = _float_digits(f)
    return _float_e(f) if exp < -4 or exp >= 6 else _float_f(f)  # shortest 'g' switches at exponent 6


def _json_float(f: float) -> str:
    if math.isnan(f) or math.isinf(f):
        raise Fail(f"json: unsupported value {f}")
    a = abs(f)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        text = _float_e(f)
        return re.sub(r"e-0(\d)$", r"e-\1", text)
    return "0" if f == 0 else _float_f(f)


_JSON_ESC = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f",
             "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _json_str(s: str) -> str:
    out = []
    for c in s:
        if c in _JSON_ESC:
            out.append(_JSON_ESC[c])
        elif ord(c) < 0x20:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _omit(v: Any) -> bool:
    return v is None or v is False or (isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0) or (
        isinstance(v, (str, list, tuple, dict)) and len(v) == 0)


def go_json(v: Any) -> str:
    """Go's json.Marshal of a value."""
    if v is None or (isinstance(v, JsonList) and v.is_nil):
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _json_float(v)
    if isinstance(v, str):
        return _json_str(v)
    if isinstance(v, GoStruct):
        parts = [f"{_json_str(j)}:{go_json(v.fields[g])}" for g, j, omit in v.json if not (omit and _omit(v.fields[g]))]
        return "{" + ",".join(parts) + "}"
    if isinstance(v, dict):
        return "{" + ",".join(f"{_json_str(str(k))}:{go_json(v[k])}" for k in sorted(v, key=str)) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(go_json(x) for x in v) + "]"
    raise Fail(f"json: unsupported type {type(v).__name__}")


def go_format(v: Any, nested: bool = False) -> str:
    """fmt's %v of a value (what `{{ . }}` and `print` write)."""
    if v is None:
        return "<nil>" if nested else "<no value>"
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return go_float(v)
    if isinstance(v, (JsonMap, JsonList)) or isinstance(v, GoStruct) and v.stringer:
        return go_json(v)
    if isinstance(v, GoStruct):
        raise Fail(f"printing a whole {v.type_name} is not supported; print its fields")
    if isinstance(v, dict):
        return "map[" + " ".join(f"{go_format(k, True)}:{go_format(v[k], True)}" for k in sorted_keys(v)) + "]"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(go_format(x, True) for x in v) + "]"
    raise Fail(f"cannot print a value of type {type(v).__name__}")


def sorted_keys(d: dict) -> list:
    try:
        return sorted(d)
    except TypeError:
        return sorted(d, key=str)


def go_truth(v: Any) -> bool:
    if v is None or (isinstance(v, JsonList) and v.is_nil):
        return False
    if isinstance(v, GoStruct):
        return True
    if isinstance(v, (bool, int, float)):
        return v != 0
    if isinstance(v, (str, list, tuple, dict)):
        return len(v) > 0
    return True


def type_name(v: Any) -> str:
    return {bool: "bool", int: "int", float: "float64", str: "string", type(None): "nil"}.get(
        type(v), v.type_name if isinstance(v, GoStruct) else "[]interface {}" if isinstance(v, (list, tuple)) else
        "map[string]interface {}" if isinstance(v, dict) else type(v).__name__)


# ---- builtin functions ---------------------------------------------------------------------------------------------

def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _basic(v: Any) -> bool:
    return v is None or isinstance(v, (str, bool, int, float))


def _eq2(a: Any, b: Any) -> bool:
    if a is None or b is None:  # Go: nil equals only nil, whatever the other type
        return a is None and b is None
    if not _basic(a) or not _basic(b):
        raise Fail(f"incompatible types for comparison: {type_name(a)} and {type_name(b)} (only basic values compare)")
    if _is_num(a) and _is_num(b) or type(a) is type(b):
        return a == b
    raise Fail(f"incompatible types for comparison: {type_name(a)} and {type_name(b)}")


def _lt(a: Any, b: Any) -> bool:
    if _is_num(a) and _is_num(b) or isinstance(a, str) and isinstance(b, str):
        return a < b
    raise Fail(f"incompatible types for comparison: {type_name(a)} and {type_name(b)}")


def _nargs(name: str, args: list, lo: int, hi: int | None = None) -> None:
    hi = lo if hi is None else hi
    if not lo <= len(args) <= hi:
        raise Fail(f"wrong number of args for {name}: want {lo if lo == hi else f'{lo}..{hi}'} got {len(args)}")


def _index(args: list) -> Any:
    if not args:
        raise Fail("wrong number of args for index: want at least 1 got 0")
    item = args[0]
    if item is None:
        raise Fail("error calling index: index of untyped nil")
    for key in args[1:]:
        if isinstance(item, (list, tuple, str)):
            if not isinstance(key, int) or isinstance(key, bool):
                raise Fail(f"error calling index: cannot index slice/array with type {type_name(key)}")
            seq = item.encode() if isinstance(item, str) else item
            if not 0 <= key < len(seq):
                raise Fail(f"error calling index: index out of range: {key}")
            item = seq[key]
        elif isinstance(item, dict):
            if not isinstance(key, str) and not all(isinstance(k, type(key)) for k in item):
                raise Fail(f"error calling index: value has type {type_name(key)}; should be string")
            item = item.get(key)
        elif item is None:
            raise Fail("error calling index: index of untyped nil")
        else:
            raise Fail(f"error calling index: can't index item of type {type_name(item)}")
    return item


def _slice(args: list) -> Any:
    if not 1 <= len(args) <= 4:
        raise Fail(f"wrong number of args for slice: want 1..4 got {len(args)}")
    item, idx = args[0], args[1:]
    if not isinstance(item, (list, tuple, str)):
        raise Fail(f"error calling slice: can't slice item of type {type_name(item)}")
    if isinstance(item, str) and len(idx) == 3:
        raise Fail("error calling slice: cannot 3-index slice a string")
    seq = item.encode() if isinstance(item, str) else item
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in idx):
        raise Fail("error calling slice: cannot index slice/array with a non-integer")
    bounds = [0, len(seq)]
    bounds[:len(idx[:2])] = idx[:2]
    lo, hi = bounds
    if not 0 <= lo <= hi <= len(seq):
        raise Fail(f"error calling slice: index out of range: [{lo}:{hi}] with length {len(seq)}")
    out = seq[lo:hi]
    return out.decode("utf-8", "replace") if isinstance(item, str) else list(out)


def _sprint(args: list) -> str:
    out = []
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(go_format(a, True))
    return "".join(out)


_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d+))?([a-zA-Z%]|$)")


def _bad_verb(verb: str, v: Any) -> str:
    return f"%!{verb}(<nil>)" if v is None else f"%!{verb}({type_name(v)}={go_format(v, True)})"


def _fmt_one(flags: str, width: str, prec: str | None, verb: str, v: Any, nested: bool = False) -> str:
    """One printf verb; slices and maps element by element, as fmt does."""
    if v is None and nested:
        return "<nil>"
    if isinstance(v, JsonMap | JsonList) or isinstance(v, GoStruct) and v.stringer:
        if verb not in "vsq":
            raise Fail(f"printf: %{verb} of a {type_name(v)} value is not supported")
        v = go_format(v)
    elif isinstance(v, GoStruct):
        raise Fail(f"printing a whole {v.type_name} is not supported; print its fields")
    elif isinstance(v, dict) and verb != "v":
        return "map[" + " ".join(f"{_fmt_one(flags, width, prec, verb, k, True)}:"
                                 f"{_fmt_one(flags, width, prec, verb, v[k], True)}" for k in sorted_keys(v)) + "]"
    elif isinstance(v, list | tuple) and verb != "v":
        return "[" + " ".join(_fmt_one(flags, width, prec, verb, x, True) for x in v) + "]"
    left, zero = "-" in flags, "0" in flags and "-" not in flags
    sign = "+" if "+" in flags else " " if " " in flags else ""
    dot = f".{prec}" if prec is not None else ""
    text_spec = f"{'<' if left else '>'}{width}{dot}"
    num_spec = f"{'<' if left else ''}{sign}{'0' if zero and width else ''}{width}"
    if verb == "v":
        return format(go_format(v, True), text_spec)
    if verb == "s" and isinstance(v, str):
        return format(v, text_spec)
    if verb == "q" and isinstance(v, str):
        quoted = go_json(v).replace("\\u003c", "<").replace("\\u003e", ">").replace("\\u0026", "&")
        return format(quoted, f"{'<' if left else '>'}{width}")
    if verb == "t" and isinstance(v, bool):
        return format(go_format(v), text_spec)
    if verb in "xX" and isinstance(v, str):
        return format(v.encode().hex() if verb == "x" else v.encode().hex().upper(), text_spec)
    if verb in "dxXobc" and isinstance(v, int) and not isinstance(v, bool):
        return format(chr(v) if verb == "c" else format(v, num_spec + verb), text_spec if verb == "c" else "")
    if verb in "feEgG" and isinstance(v, float):
        if verb in "gG" and prec is None:
            text = go_float(v)
            return format(text.upper() if verb == "G" else text, f"{'<' if left else '>'}{width}")
        return format(v, num_spec + (dot or ".6" if verb in "feE" else dot) + verb)
    if (flags or width or prec is not None or verb not in "vsqtdxXobcfeEgG"
            or isinstance(v, float) and verb in "xXobq" or _is_num(v) and not isinstance(v, float) and verb == "q"):
        raise Fail(f"printf: %{flags}{width}{dot}{verb} of a {type_name(v)} value is not supported")
    return _bad_verb(verb, v)


def _sprintf(args: list) -> str:
    """fmt.Sprintf for the common verbs (v s q t d x X o b c f e E g G), flags - + space 0, width, precision."""
    if not args or not isinstance(args[0], str):
        raise Fail("printf needs a format string as its first argument")
    fmt, rest = args[0], list(args[1:])
    if "%[" in fmt or "%*" in fmt or re.search(r"%[-+# 0]*\d*\.\*", fmt):
        raise Fail("printf argument indexes and * widths are not supported")

    def one(m: re.Match) -> str:
        flags, width, prec, verb = m.group(1), m.group(2) or "", m.group(3), m.group(4)
        if verb == "%":
            return "%"
        if verb == "":
            return "%!(NOVERB)"
        if not rest:
            return f"%!{verb}(MISSING)"
        return _fmt_one(flags, width, prec, verb, rest.pop(0))

    out = _VERB.sub(one, fmt)
    if rest:
        out += "%!(EXTRA " + ", ".join(
            "<nil>" if v is None else f"{type_name(v)}={go_format(v, True)}" for v in rest) + ")"
    return out


def call_function(name: str, args: list) -> Any:
    """A non-short-circuit builtin applied to evaluated args."""
    if name == "not":
        _nargs(name, args, 1)
        return not go_truth(args[0])
    if name == "len":
        _nargs(name, args, 1)
        v = args[0]
        if isinstance(v, str):
            return len(v.encode())
        if isinstance(v, (list, tuple, dict)) and not (isinstance(v, JsonList) and v.is_nil):
            return len(v)
        if isinstance(v, JsonList):
            return 0
        raise Fail(f"error calling len: len of type {type_name(v)}")
    if name == "eq":
        if len(args) < 2:
            raise Fail(f"wrong number of args for eq: want at least 2 got {len(args)}")
        return any(_eq2(args[0], b) for b in args[1:])
    if name in ("ne", "lt", "le", "gt", "ge"):
        _nargs(name, args, 2)
        a, b = args
        return {"ne": lambda: not _eq2(a, b), "lt": lambda: _lt(a, b), "le": lambda: _lt(a, b) or _eq2(a, b),
                "gt": lambda: not _lt(a, b) and not _eq2(a, b), "ge": lambda: not _lt(a, b)}[name]()
    if name == "index":
        return _index(args)
    if name == "slice":
        return _slice(args)
    if name == "print":
        return _sprint(args)
    if name == "println":
        return " ".join(go_format(a, True) for a in args) + "\n"
    if name == "printf":
        return _sprintf(args)
    if name == "json":
        _nargs(name, args, 1)
        return go_json(args[0])
    raise AssertionError(name)  # the parser only lets known functions through
