"""Ollama-style Modelfile: parse one into a typed `Modelfile`, and render one back to text.

Instructions: FROM, PARAMETER, TEMPLATE, SYSTEM, ADAPTER, LICENSE, MESSAGE (keywords in any case, `#` comment
lines). A value is bare (the rest of the line), `"quoted"` (one line; `\\"` and `\\\\` escapes) or
`\"\"\"multi-line\"\"\"` (one newline right after the opening and right before the closing quotes is dropped).

TEMPLATE holds a Jinja chat template (the Hugging Face convention) or an Ollama Go template (`{{ .Prompt }}`,
`{{ range .Messages }}`); both are checked here and rendered by tokenizer.py (Go ones via athanor.text.gotemplate).
Not for resolving FROM or ADAPTER paths or writing manifests (store.py does that).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from athanor.errors import AthanorError

# Ollama's parameter names and the type each value is parsed to; `stop` repeats and becomes a list
PARAMETER_TYPES: dict[str, type] = {
    "num_ctx": int,
    "num_predict": int,
    "temperature": float,
    "top_k": int,
    "top_p": float,
    "min_p": float,
    "repeat_penalty": float,
    "repeat_last_n": int,
    "presence_penalty": float,
    "frequency_penalty": float,
    "seed": int,
    "stop": str,
}
MESSAGE_ROLES = ("system", "user", "assistant")
INSTRUCTIONS = ("FROM", "PARAMETER", "TEMPLATE", "SYSTEM", "ADAPTER", "LICENSE", "MESSAGE")


class ModelfileError(AthanorError):
    """A Modelfile that cannot be parsed or resolved; the message is `PATH:LINE: INSTRUCTION: what is wrong`."""

    def __init__(self, path: str, line: int, instruction: str, message: str) -> None:
        super().__init__(f"{path}:{line}: {instruction}: {message}")
        self.path, self.line, self.instruction = path, line, instruction


@dataclass
class Modelfile:
    """The instructions of one Modelfile. Later TEMPLATE/SYSTEM/LICENSE/PARAMETER win; ADAPTER, MESSAGE and
    PARAMETER stop accumulate in file order."""

    from_: str  # model name, .gguf path or HF directory, exactly as written
    path: str = "Modelfile"  # where it was read from, for error messages and relative paths
    from_line: int = 1
    parameters: dict[str, Any] = field(default_factory=dict)  # typed per PARAMETER_TYPES; stop -> list[str]
    template: str | None = None  # Jinja chat template
    system: str | None = None
    adapters: list[str] = field(default_factory=list)  # as written, relative to the Modelfile's directory
    adapter_lines: list[int] = field(default_factory=list)  # line of each ADAPTER, for error messages
    license: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)  # {"role": ..., "content": ...}


def parse_modelfile(path: str | Path) -> Modelfile:
    """Read and parse the Modelfile at `path`; errors are `ModelfileError` with `path:line`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AthanorError(f"Modelfile not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AthanorError(f"cannot read Modelfile {path}: {e}") from None
    return parse_modelfile_text(text, str(path))


def parse_modelfile_text(text: str, path: str = "Modelfile") -> Modelfile:
    """Parse Modelfile text; `path` is only used in error messages and kept on the result."""
    lines = text.splitlines()
    mf = Modelfile(from_="", path=path, from_line=0)  # from_line 0: no FROM seen yet
    i = 0
    while i < len(lines):
        lineno, stripped = i + 1, lines[i].strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        keyword, rest = (stripped.split(None, 1) + [""])[:2]
        keyword = keyword.upper()
        if keyword not in INSTRUCTIONS:
            raise ModelfileError(
                path, lineno, keyword, f"unknown instruction; expected one of {', '.join(INSTRUCTIONS)}"
            )
        value, i = _read_args(keyword, rest, lines, i, path)
        _apply(mf, keyword, value, lineno)
    if not mf.from_line:
        raise ModelfileError(path, 1, "FROM", "missing FROM (e.g. `FROM smollm2` or `FROM ./model.gguf`)")
    return mf


_USAGE = {"PARAMETER": "PARAMETER <name> <value>", "MESSAGE": "MESSAGE <role> <content>"}


def _read_args(keyword: str, rest: str, lines: list[str], i: int, path: str) -> tuple[Any, int]:
    """Read an instruction's arguments starting on line i; returns (value, index of the next line)."""
    if keyword in _USAGE:
        parts = rest.split(None, 1)
        if len(parts) < 2:
            raise ModelfileError(path, i + 1, keyword, f"expected {_USAGE[keyword]}")
        value, i = _read_value(parts[1], lines, i, path, keyword)
        return (parts[0], value), i
    return _read_value(rest, lines, i, path, keyword)


def _read_value(rest: str, lines: list[str], i: int, path: str, keyword: str) -> tuple[str, int]:
    """One value: bare, "quoted" or \"\"\"multi-line\"\"\"; returns (text, index of the next line)."""
    lineno = i + 1
    if rest.startswith('"""'):
        return _read_triple(rest[3:], lines, i, path, keyword)
    if rest.startswith('"'):
        return _read_quoted(rest, path, lineno, keyword), i + 1
    if not rest:
        raise ModelfileError(path, lineno, keyword, "missing value")
    return rest, i + 1


def _read_triple(first: str, lines: list[str], i: int, path: str, keyword: str) -> tuple[str, int]:
    start = i + 1
    chunks, text = [], first
    while True:
        end = text.find('"""')
        if end >= 0:
            if text[end + 3 :].strip():
                raise ModelfileError(path, i + 1, keyword, 'unexpected text after closing """')
            chunks.append(text[:end])
            break
        chunks.append(text)
        i += 1
        if i >= len(lines):
            raise ModelfileError(path, start, keyword, 'unterminated """ (no closing """ before end of file)')
        text = lines[i]
    value = "\n".join(chunks)
    value = value.removeprefix("\n")
    value = value.removesuffix("\n")
    return value, i + 1


def _read_quoted(rest: str, path: str, lineno: int, keyword: str) -> str:
    out, j = [], 1
    while j < len(rest):
        c = rest[j]
        if c == "\\" and j + 1 < len(rest) and rest[j + 1] in '"\\':
            out.append(rest[j + 1])
            j += 2
            continue
        if c == '"':
            if rest[j + 1 :].strip():
                raise ModelfileError(path, lineno, keyword, "unexpected text after closing quote")
            return "".join(out)
        out.append(c)
        j += 1
    raise ModelfileError(path, lineno, keyword, 'unterminated quoted string (use """ for multi-line values)')


def _apply(mf: Modelfile, keyword: str, value: Any, lineno: int) -> None:
    if keyword == "FROM":
        if mf.from_line:
            raise ModelfileError(mf.path, lineno, "FROM", f"second FROM (the first is on line {mf.from_line})")
        mf.from_, mf.from_line = value, lineno
    elif keyword == "PARAMETER":
        name, raw = value
        _set_parameter(mf, name.lower(), raw, lineno)
    elif keyword == "TEMPLATE":
        mf.template = _check_template(value, mf.path, lineno)
    elif keyword == "SYSTEM":
        mf.system = value
    elif keyword == "ADAPTER":
        mf.adapters.append(value)
        mf.adapter_lines.append(lineno)
    elif keyword == "LICENSE":
        mf.license = value if mf.license is None else f"{mf.license}\n\n{value}"
    elif keyword == "MESSAGE":
        role, content = value
        if role.lower() not in MESSAGE_ROLES:
            raise ModelfileError(
                mf.path, lineno, "MESSAGE", f"role must be one of {', '.join(MESSAGE_ROLES)}, got {role!r}"
            )
        mf.messages.append({"role": role.lower(), "content": content})
    else:
        raise AssertionError(keyword)


def _set_parameter(mf: Modelfile, name: str, raw: str, lineno: int) -> None:
    kind = PARAMETER_TYPES.get(name)
    if kind is None:
        close = difflib.get_close_matches(name, PARAMETER_TYPES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(PARAMETER_TYPES)}"
        raise ModelfileError(mf.path, lineno, "PARAMETER", f"unknown parameter {name!r}{hint}")
    if name == "stop":
        mf.parameters.setdefault("stop", []).append(raw)
        return
    try:
        mf.parameters[name] = kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ModelfileError(mf.path, lineno, "PARAMETER", f"{name} expects {what}, got {raw!r}") from None


def _check_template(template: str, path: str, lineno: int) -> str:
    from athanor.text.gotemplate import GoTemplateError, is_go_template, parse

    if is_go_template(template):  # Ollama's TEMPLATE syntax: rendered by athanor.text.gotemplate the way Ollama does
        try:
            parse(template)
        except GoTemplateError as e:
            raise ModelfileError(path, lineno, "TEMPLATE", str(e)) from None
        return template
    import jinja2  # lazy: only Modelfiles with a TEMPLATE pay for it

    try:
        jinja2.Environment().parse(template)
    except jinja2.TemplateSyntaxError as e:
        raise ModelfileError(
            path, lineno, "TEMPLATE", f"invalid Jinja template: {e.message} (template line {e.lineno})"
        ) from None
    return template


def render_modelfile_text(mf: Modelfile) -> str:
    """Modelfile text that `parse_modelfile_text` turns back into an equal `Modelfile` (paths as given)."""
    out = [f"FROM {_quote(mf.from_)}"]
    if mf.template is not None:
        out.append(f"TEMPLATE {_quote(mf.template)}")
    if mf.system is not None:
        out.append(f"SYSTEM {_quote(mf.system)}")
    for name, value in mf.parameters.items():
        for v in value if isinstance(value, list) else [value]:
            out.append(f"PARAMETER {name} {_quote(str(v))}")
    out += [f"ADAPTER {_quote(a)}" for a in mf.adapters]
    out += [f"MESSAGE {m['role']} {_quote(m['content'])}" for m in mf.messages]
    if mf.license is not None:
        out.append(f"LICENSE {_quote(mf.license)}")
    return "\n".join(out) + "\n"


def _quote(value: str) -> str:
    """The shortest form that parses back to exactly `value`."""
    if "\n" in value or "\r" in value:
        if '"""' in value:
            raise AthanorError('cannot write a multi-line Modelfile value that contains """')
        return f'"""\n{value}\n"""'
    if value and value == value.strip() and not value.startswith('"'):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
