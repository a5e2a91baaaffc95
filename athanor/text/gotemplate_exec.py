"""Executes a parsed Go template (athanor.text.gotemplate_parse) over Python data, with Go's rules.

Walks the node tree: text, actions (printed with fmt's %v unless they declare a variable), if/with/range with their
else lists, break/continue, `$` and declared variables scoped to their control structure, pipelines where each
command's result is the last argument of the next, `and`/`or` evaluating lazily. Values, formatting and the other
builtins live in athanor.text.gotemplate_values. Not for: parsing (gotemplate_parse), Ollama's data (gotemplate).
"""

from __future__ import annotations

from typing import Any

from athanor.text.gotemplate_parse import (
    Action,
    Branch,
    Chain,
    Command,
    Dot,
    Field,
    Identifier,
    Literal,
    LoopControl,
    Nil,
    Node,
    Pipe,
    Text,
    Variable,
    fail,
)
from athanor.text.gotemplate_values import (
    Fail,
    GoStruct,
    JsonList,
    call_function,
    go_format,
    go_truth,
    sorted_keys,
    type_name,
)


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


_NO_FINAL = object()  # no value piped in from a previous command


class Executor:
    """One execution: the output buffer and the variable stack ($ is the data)."""

    def __init__(self, source: str, data: Any) -> None:
        self.source = source
        self.vars: list[list[Any]] = [["$", data, False]]  # [name, value, set from a pipeline]
        self.out: list[str] = []

    def run(self, nodes: list[Node]) -> str:
        try:
            self.walk(nodes, self.vars[0][1])
        except RecursionError:
            raise fail(self.source, 0, "data or template nests too deeply") from None
        return "".join(self.out)

    def walk(self, nodes: list[Node], dot: Any) -> None:
        for node in nodes:
            if isinstance(node, Text):
                self.out.append(node.text)
            elif isinstance(node, Action):
                value = self.pipe(node.pipe, dot)
                if not node.pipe.decl:
                    self.out.append(self.guard(node, go_format, value))
            elif isinstance(node, Branch):
                self.branch(node, dot)
            elif isinstance(node, LoopControl):
                raise _Break() if node.kind == "break" else _Continue()
            else:
                raise TypeError(f"unknown node {node!r}")

    def guard(self, node: Node, fn, *args) -> Any:
        try:
            return fn(*args)
        except Fail as e:
            raise fail(self.source, node.pos, str(e)) from None
        except RecursionError:
            raise fail(self.source, node.pos, "template nests too deeply") from None

    def branch(self, node: Branch, dot: Any) -> None:
        mark = len(self.vars)
        try:
            if node.kind == "range":
                self.range(node, dot)
                return
            value = self.pipe(node.pipe, dot)
            if go_truth(value):
                self.walk(node.body, value if node.kind == "with" else dot)
            elif node.else_body is not None:
                self.walk(node.else_body, dot)
        finally:
            del self.vars[mark:]

    def range(self, node: Branch, dot: Any) -> None:
        value = self.pipe(node.pipe, dot, declare=False)
        if value is None or isinstance(value, JsonList) and value.is_nil:
            pairs: list = []
        elif isinstance(value, (list, tuple)):
            pairs = list(enumerate(value))
        elif isinstance(value, dict):
            pairs = [(k, value[k]) for k in sorted_keys(value)]
        elif isinstance(value, int) and not isinstance(value, bool):
            pairs = [(i, i) for i in range(value)]
        else:
            raise fail(self.source, node.pos, f"range can't iterate over {go_format(value, True)!r} "
                                              f"(a {type_name(value)})")
        if not pairs:
            if node.else_body is not None:
                self.walk(node.else_body, dot)
            return
        decl = node.pipe.decl
        for key, elem in pairs:
            mark = len(self.vars)
            values = [elem] if len(decl) == 1 else [key, elem]
            for name, value in zip(decl, values, strict=False):
                if node.pipe.is_assign:  # {{range $i, $v = ...}} sets variables declared outside the loop
                    self.assign(name, value, from_pipe=False)
                else:
                    self.vars.append([name, value, False])
            try:
                self.walk(node.body, elem)
            except _Continue:
                pass
            except _Break:
                break
            finally:
                del self.vars[mark:]

    def pipe(self, pipe: Pipe, dot: Any, declare: bool = True) -> Any:
        value = _NO_FINAL
        for cmd in pipe.cmds:
            value = self.command(cmd, dot, value)
        if declare and pipe.decl:
            if pipe.is_assign:
                self.assign(pipe.decl[0], value)
            else:
                self.vars.append([pipe.decl[0], value, True])
        return value

    def assign(self, name: str, value: Any, from_pipe: bool = True) -> None:
        for slot in reversed(self.vars):
            if slot[0] == name:
                slot[1:] = [value, from_pipe]
                return
        raise AssertionError(name)  # the parser rejects assignment to an undeclared variable

    def command(self, cmd: Command, dot: Any, final: Any) -> Any:
        first = cmd.args[0]
        if isinstance(first, Identifier):
            return self.function(first, cmd.args[1:], dot, final)
        if len(cmd.args) > 1 or final is not _NO_FINAL:
            raise fail(self.source, first.pos, "can't give argument to non-function")
        if isinstance(first, Nil):
            raise fail(self.source, first.pos, "nil is not a command")
        return self.arg(first, dot)

    def function(self, ident: Identifier, arg_nodes: list[Node], dot: Any, final: Any) -> Any:
        name = ident.name
        if name in ("and", "or"):  # short-circuit: later arguments are not evaluated
            nodes: list[Any] = list(arg_nodes) + ([] if final is _NO_FINAL else [final])
            if not nodes:
                raise fail(self.source, ident.pos, f"wrong number of args for {name}: want at least 1 got 0")
            value = None
            for n in nodes:
                value = self.arg(n, dot) if isinstance(n, Node) else n
                if go_truth(value) != (name == "and"):
                    return value
            return value
        args = [self.arg(n, dot) for n in arg_nodes] + ([] if final is _NO_FINAL else [final])
        return self.guard(ident, call_function, name, args)

    def arg(self, node: Node, dot: Any) -> Any:
        if isinstance(node, Dot):
            return dot
        if isinstance(node, Nil):
            return None
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, Field):
            return self.fields(node, dot, node.idents)
        if isinstance(node, Variable):
            value, from_pipe = self.variable(node.idents[0])
            # Go keeps a pipeline's nil result as "no value", whose fields are no value too (no error)
            return None if value is None and from_pipe else self.fields(node, value, node.idents[1:])
        if isinstance(node, Chain):
            value = self.arg(node.node, dot)
            return None if value is None and isinstance(node.node, Pipe) else self.fields(node, value, node.fields)
        if isinstance(node, Pipe):
            return self.pipe(node, dot)
        if isinstance(node, Identifier):
            return self.function(node, [], dot, _NO_FINAL)
        raise AssertionError(node)

    def variable(self, name: str) -> tuple[Any, bool]:
        for slot in reversed(self.vars):
            if slot[0] == name:
                return slot[1], slot[2]
        raise AssertionError(name)  # the parser rejects undefined variables

    def fields(self, node: Node, value: Any, names: list[str]) -> Any:
        for name in names:
            if isinstance(value, GoStruct):
                if name not in value.fields:
                    raise fail(self.source, node.pos, f"can't evaluate field {name} in type {value.type_name}")
                value = value.fields[name]
            elif isinstance(value, dict):
                value = value.get(name)
            elif value is None:
                raise fail(self.source, node.pos, f"nil pointer evaluating interface {{}}.{name}")
            else:
                raise fail(self.source, node.pos, f"can't evaluate field {name} in type {type_name(value)}")
        return value
