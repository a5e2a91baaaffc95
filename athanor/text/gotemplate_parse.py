"""Lexer and parser for the subset of Go's text/template that Ollama prompt templates use.

Produces a small node tree (the same shapes as Go's text/template/parse: list, text, action, if/range/with with
an else list, pipelines of commands) that `athanor.text.gotemplate_exec` walks. Checks at parse time what Go checks
at parse time: unknown functions, undefined variables, unmatched `{{end}}`/`{{else}}`, unclosed actions and
strings. Not for: `{{define}}`/`{{template}}`/`{{block}}` (named sub-templates), custom delimiters, methods.
Every error is one `GoTemplateError` line that starts with the template position `line:col`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from athanor.errors import AthanorError

# Functions of Go's text/template (and Ollama's `json`) that the executor implements.
FUNCTIONS = frozenset(["and", "or", "not", "len", "index", "slice", "print", "printf", "println", "json", "eq", "ne", "lt", "le", "gt", "ge"])
# Go builtins left out on purpose: named in the error so the user knows it is a Go function we lack.
UNSUPPORTED_FUNCTIONS = frozenset(["call", "html", "js", "urlquery"])
_KEYWORDS = frozenset(["if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"])


class GoTemplateError(AthanorError, ValueError):
    """A Go template that cannot be parsed or executed; the message starts with `line:col` in the template."""


def position(source: str, offset: int) -> str:
    line = source.count("\n", 0, offset) + 1
    col = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return f"{line}:{col}"


def fail(source: str, offset: int, message: str) -> GoTemplateError:
    return GoTemplateError(f"Go template {position(source, offset)}: {message}")


# ---- nodes ---------------------------------------------------------------------------------------------------------

@dataclass
class Node:
    pos: int


@dataclass
class Text(Node):
    text: str


@dataclass
class Field(Node):
    idents: list[str]  # .A.B -> ["A", "B"]


@dataclass
class Variable(Node):
    idents: list[str]  # $x.A -> ["$x", "A"]


@dataclass
class Chain(Node):
    node: Node  # (pipeline).A.B
    fields: list[str]


@dataclass
class Dot(Node):
    pass


@dataclass
class Nil(Node):
    pass


@dataclass
class Literal(Node):
    value: Any  # str, int, float or bool


@dataclass
class Identifier(Node):
    name: str  # a function name


@dataclass
class Command(Node):
    args: list[Node]


@dataclass
class Pipe(Node):
    decl: list[str]  # variables declared (`:=`) or assigned (`=`)
    is_assign: bool
    cmds: list[Command]


@dataclass
class Action(Node):
    pipe: Pipe


@dataclass
class Branch(Node):
    kind: str  # "if", "range" or "with"
    pipe: Pipe
    body: list[Node]
    else_body: list[Node] | None = None


@dataclass
class LoopControl(Node):
    kind: str  # "break" or "continue"


# ---- lexer ---------------------------------------------------------------------------------------------------------

@dataclass
class Token:
    kind: str  # field variable ident keyword string number char bool nil dot pipe lparen rparen decl assign comma
    value: Any
    pos: int
    spaced: bool  # whitespace came right before it (ends a field chain)


@dataclass
class ActionTokens:
    pos: int  # offset of `{{`
    tokens: list[Token] = field(default_factory=list)


_SPACE = " \t\r\n"
_TOKEN_RE = re.compile(r"""
    (?P<number>[+-]?(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?))
  | (?P<field>\.[A-Za-z_]\w*)
  | (?P<dot>\.)
  | (?P<variable>\$\w*)
  | (?P<ident>[A-Za-z_]\w*)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\\n]|\\.)+')
  | (?P<decl>:=) | (?P<assign>=) | (?P<pipe>\|) | (?P<lparen>\() | (?P<rparen>\)) | (?P<comma>,)
""", re.VERBOSE)
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"',
            "'": "'"}


def _unquote(source: str, pos: int, body: str) -> str:
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = body[i + 1]
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            i += 2
        elif e in "xuU":
            n = {"x": 2, "u": 4, "U": 8}[e]
            digits = body[i + 2:i + 2 + n]
            if len(digits) != n or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise fail(source, pos, f"invalid escape \\{e}{digits} in quoted string")
            out.append(chr(int(digits, 16)))
            i += 2 + n
        elif e in "01234567" and re.fullmatch(r"[0-7]{3}", body[i + 1:i + 4]):
            out.append(chr(int(body[i + 1:i + 4], 8)))
            i += 4
        else:
            raise fail(source, pos, f"invalid escape \\{e} in quoted string")
    return "".join(out)


def _number(source: str, pos: int, text: str) -> int | float:
    t = text.replace("_", "")
    try:
        if re.fullmatch(r"[+-]?0[xXbBoO].*", t):
            return int(t, 0)
        if re.fullmatch(r"[+-]?\d+", t):
            return int(t, 10)
        return float(t)
    except ValueError:
        raise fail(source, pos, f"bad number syntax: {text!r}") from None


def _lex_action(source: str, start: int, body_start: int) -> tuple[ActionTokens, int, bool]:
    """Tokens of one action from `body_start` to its `}}`; returns (tokens, offset after `}}`, right-trim)."""
    act, i, spaced = ActionTokens(start), body_start, True
    while True:
        if i >= len(source):
            raise fail(source, start, "unclosed action")
        c = source[i]
        if c in _SPACE:
            if source.startswith("-}}", i + 1):
                return act, i + 4, True
            i, spaced = i + 1, True
            continue
        if source.startswith("}}", i):
            return act, i + 2, False
        m = _TOKEN_RE.match(source, i)
        if m is None:
            if c in "\"'`":
                raise fail(source, i, "unterminated quoted string")
            raise fail(source, i, f"unexpected {c!r} in action")
        kind, text = m.lastgroup, m.group()
        if kind == "number" and text[0] in "+-" and act.tokens and not spaced:
            raise fail(source, i, f"unexpected {text[0]!r} in action")
        value: Any = text
        if kind == "number":
            value = _number(source, i, text)
        elif kind == "string":
            value = _unquote(source, i, text[1:-1])
        elif kind == "raw":
            kind, value = "string", text[1:-1]
        elif kind == "char":
            chars = _unquote(source, i, text[1:-1])
            if len(chars) != 1:
                raise fail(source, i, f"malformed character constant {text}")
            kind, value = "number", ord(chars)
        elif kind == "ident":
            if text in ("true", "false"):
                kind, value = "bool", text == "true"
            elif text == "nil":
                kind = "nil"
            elif text in _KEYWORDS:
                kind = "keyword"
        act.tokens.append(Token(kind, value, i, spaced))
        i, spaced = m.end(), False


def lex(source: str) -> list[str | ActionTokens]:
    """Text pieces (trim markers applied) and actions, in order; comments dropped."""
    out: list[str | ActionTokens] = []
    i, trim_next = 0, False
    while i <= len(source):
        j = source.find("{{", i)
        text = source[i:] if j < 0 else source[i:j]
        if trim_next:
            text = text.lstrip(_SPACE)
        if j < 0:
            out.append(text)
            return out
        body = j + 2
        if source.startswith("-", body) and body + 1 < len(source) and source[body + 1] in _SPACE:
            text, body = text.rstrip(_SPACE), body + 2
            while body < len(source) and source[body] in _SPACE:
                body += 1
        out.append(text)
        if source.startswith("/*", body):
            end = source.find("*/", body + 2)
            if end < 0:
                raise fail(source, j, "unclosed comment")
            after = end + 2
            if source.startswith("}}", after):
                i, trim_next = after + 2, False
            elif source[after:after + 1] in tuple(_SPACE) and source.startswith("-}}", after + 1):
                i, trim_next = after + 4, True
            else:
                raise fail(source, j, "comment ends before closing delimiter")
            continue
        act, i, trim_next = _lex_action(source, j, body)
        out.append(act)
    return out


# ---- parser --------------------------------------------------------------------------------------------------------

class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.items = lex(source)
        self.i = 0
        self.vars: list[str] = ["$"]
        self.range_depth = 0

    def error(self, pos: int, message: str) -> GoTemplateError:
        return fail(self.source, pos, message)

    def parse(self) -> list[Node]:
        body, stop = self.list_until(top=True)
        assert stop is None
        return body

    def list_until(self, top: bool = False) -> tuple[list[Node], tuple[str, ActionTokens] | None]:
        """Nodes up to an `{{end}}`/`{{else ...}}` (returned, not consumed as a node) or the end of the source."""
        nodes: list[Node] = []
        pos = 0
        while self.i < len(self.items):
            item = self.items[self.i]
            self.i += 1
            if isinstance(item, str):
                if item:
                    nodes.append(Text(pos, item))
                continue
            pos = item.pos
            if not item.tokens:
                raise self.error(item.pos, "missing value for command")
            first = item.tokens[0]
            if first.kind == "keyword" and first.value in ("end", "else"):
                if top:
                    raise self.error(item.pos, f"unexpected {{{{{first.value}}}}}")
                return nodes, (first.value, item)
            nodes.append(self.action(item))
        if not top:
            raise self.error(len(self.source), "unexpected EOF: an {{if}}/{{range}}/{{with}} has no {{end}}")
        return nodes, None

    def action(self, act: ActionTokens) -> Node:
        first = act.tokens[0]
        if first.kind == "keyword":
            word = first.value
            if word in ("if", "range", "with"):
                return self.control(word, act, 1)
            if word in ("break", "continue"):
                if self.range_depth == 0:
                    raise self.error(act.pos, f"{{{{{word}}}}} outside {{{{range}}}}")
                if len(act.tokens) > 1:
                    raise self.error(act.tokens[1].pos, f"unexpected {act.tokens[1].value!r} in {{{{{word}}}}}")
                return LoopControl(act.pos, word)
            raise self.error(act.pos, f"{{{{{word}}}}} is not supported (athanor's Go template subset has no "
                                      "named templates: define, template and block)")
        return Action(act.pos, self.pipeline(act, 0, len(act.tokens), "command"))

    def control(self, kind: str, act: ActionTokens, start: int) -> Branch:
        mark = len(self.vars)
        self.range_depth += kind == "range"
        pipe = self.pipeline(act, start, len(act.tokens), kind)
        body, (word, stop_act) = self.list_until()
        self.range_depth -= kind == "range"  # a range's else list is outside the loop
        else_body = None
        if word == "else":
            toks = stop_act.tokens
            if len(toks) > 1 and toks[1].kind == "keyword" and toks[1].value == kind and kind != "range":
                # {{if a}}x{{else if b}}y{{end}} is {{if a}}x{{else}}{{if b}}y{{end}}{{end}}: one shared {{end}}
                else_body = [self.control(kind, stop_act, 2)]
            else:
                if len(toks) > 1:
                    raise self.error(toks[1].pos, f"unexpected {toks[1].value!r} in {{{{else}}}}")
                else_body, (word, stop_act) = self.list_until()
                if word == "else":
                    raise self.error(stop_act.pos, "expected {{end}}; found {{else}}")
        if word == "end" and len(stop_act.tokens) > 1:
            raise self.error(stop_act.tokens[1].pos, f"unexpected {stop_act.tokens[1].value!r} in {{{{end}}}}")
        del self.vars[mark:]
        return Branch(act.pos, kind, pipe, body, else_body)

    def pipeline(self, act: ActionTokens, start: int, end: int, context: str) -> Pipe:
        toks = act.tokens
        decl: list[str] = []
        is_assign = False
        i = start
        # declarations: `$x :=`, `$x =`, and in range `$i, $v :=`
        if i < end and toks[i].kind == "variable":
            names, j = [toks[i]], i + 1
            if j < end and toks[j].kind == "comma" and context == "range":
                if j + 1 < end and toks[j + 1].kind == "variable":
                    names.append(toks[j + 1])
                    j += 2
                else:
                    raise self.error(toks[j].pos, "range can only initialize variables")
            if j < end and toks[j].kind in ("decl", "assign"):
                is_assign = toks[j].kind == "assign"
                for t in names:
                    if is_assign and t.value not in self.vars:
                        raise self.error(t.pos, f"undefined variable {t.value!r}")
                decl = [t.value for t in names]
                i = j + 1
            elif len(names) > 1:
                raise self.error(toks[j].pos if j < end else act.pos, "expected := or = after range variables")
        cmds, i = self.commands(act, i, end)
        if i < end:
            raise self.error(toks[i].pos, f"unexpected {toks[i].value!r} in {context}")
        if not cmds:
            raise self.error(act.pos, f"missing value for {context}")
        if decl and not is_assign:
            self.vars.extend(decl)
        return Pipe(act.pos, decl, is_assign, cmds)

    def commands(self, act: ActionTokens, i: int, end: int) -> tuple[list[Command], int]:
        toks, cmds = act.tokens, []
        while i < end:
            args: list[Node] = []
            while i < end and toks[i].kind not in ("pipe", "rparen"):
                node, i = self.operand(act, i, end)
                args.append(node)
            if not args:
                raise self.error(toks[i].pos if i < end else act.pos, "missing value for command")
            if cmds and isinstance(args[0], (Literal, Dot, Nil)):
                raise self.error(args[0].pos, f"non executable command in pipeline stage {len(cmds) + 1}")
            cmds.append(Command(args[0].pos, args))
            if i >= end or toks[i].kind == "rparen":
                break
            i += 1  # the `|`
            if i >= end:
                raise self.error(toks[i - 1].pos, "missing command after |")
        return cmds, i

    def operand(self, act: ActionTokens, i: int, end: int) -> tuple[Node, int]:
        t = act.tokens[i]
        node: Node
        if t.kind == "field":
            node = Field(t.pos, [t.value[1:]])
        elif t.kind == "variable":
            if t.value not in self.vars:
                raise self.error(t.pos, f"undefined variable {t.value!r}")
            node = Variable(t.pos, [t.value])
        elif t.kind == "dot":
            node = Dot(t.pos)
        elif t.kind == "nil":
            node = Nil(t.pos)
        elif t.kind in ("string", "number", "bool"):
            node = Literal(t.pos, t.value)
        elif t.kind == "ident":
            if t.value in UNSUPPORTED_FUNCTIONS:
                raise self.error(t.pos, f"function {t.value!r} is not supported by athanor's Go template subset")
            if t.value not in FUNCTIONS:
                raise self.error(t.pos, f"function {t.value!r} not defined")
            node = Identifier(t.pos, t.value)
        elif t.kind == "lparen":
            cmds, j = self.commands(act, i + 1, end)
            if j >= end or act.tokens[j].kind != "rparen":
                raise self.error(t.pos, "unclosed left paren")
            node, i = Pipe(t.pos, [], False, cmds), j
        else:
            raise self.error(t.pos, f"unexpected {t.value!r} in operand")
        i += 1
        fields = []
        while i < end and act.tokens[i].kind == "field" and not act.tokens[i].spaced:
            fields.append(act.tokens[i].value[1:])
            i += 1
        if fields:
            if isinstance(node, (Field, Variable)):
                node.idents.extend(fields)
            elif isinstance(node, (Literal, Nil, Identifier)):
                raise self.error(t.pos, f"unexpected . after term {t.value!r}")
            else:
                node = Chain(t.pos, node, fields)
        return node, i


def parse_nodes(source: str) -> list[Node]:
    """Parse a Go template into a node list; GoTemplateError (with `line:col`) on any syntax error."""
    try:
        return _Parser(source).parse()
    except RecursionError:
        raise fail(source, 0, "template nests too deeply") from None
