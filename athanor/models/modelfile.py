"""Ollama-style Modelfile: parse one into a typed `Modelfile`, and render one back to text.

Instructions: FROM, PARAMETER, TEMPLATE, SYSTEM, ADAPTER, LICENSE, MESSAGE, REQUIRES (keywords in any case, `#`
comment lines); DRAFT, RENDERER and PARSER are Ollama's too and are refused with a one-line reason. A value is bare
(the rest of the line, trailing blanks trimmed), `"quoted"` (one line; `\\"` and `\\\\` escapes) or
`\"\"\"multi-line\"\"\"` (kept exactly, newlines after the opening and before the closing quotes included, as
Ollama keeps them). The file may be UTF-8 or UTF-16 with a byte-order mark, as Ollama reads it.

PARAMETERs: the sampling ones go to the engine; Ollama's runtime ones (num_batch, num_gpu, ...) are accepted with a
`ModelfileWarning` saying they change nothing here; deprecated ones (mirostat, ...) warn as Ollama does.

TEMPLATE holds a Jinja chat template (the Hugging Face convention) or an Ollama Go template (`{{ .Prompt }}`,
`{{ range .Messages }}`); both are checked here and rendered by tokenizer.py (Go ones via athanor.text.gotemplate).
Not for resolving FROM or ADAPTER paths or writing manifests (store.py does that).
"""

from __future__ import annotations

import difflib
import re
import warnings
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
# Ollama's runtime options: accepted (its Modelfiles use them) but with no effect on this engine, each with why
RUNTIME_PARAMETERS: dict[str, tuple[type, str]] = {
    "num_batch": (int, "the engine sizes its own prefill chunks (max_num_batched_tokens)"),
    "num_gpu": (int, "layers are not split between devices here"),
    "main_gpu": (int, "the device is chosen by athanor serve --device"),
    "use_mmap": (bool, "weights are read into memory once"),
    "num_thread": (int, "torch's thread count is set per process"),
    "num_keep": (int, "a prompt longer than the context is refused, never shifted"),
    "typical_p": (float, "the sampler has no typical sampling"),
    "draft_num_predict": (int, "there is no speculative decoding"),
    "numa": (bool, "no NUMA placement"),
}
# Ollama warns on these and drops them (parser.go deprecatedParameters)
DEPRECATED_PARAMETERS = ("penalize_newline", "low_vram", "f16_kv", "logits_all", "vocab_only", "use_mlock",
                         "mirostat", "mirostat_tau", "mirostat_eta")
MESSAGE_ROLES = ("system", "user", "assistant")
INSTRUCTIONS = ("FROM", "PARAMETER", "TEMPLATE", "SYSTEM", "ADAPTER", "LICENSE", "MESSAGE", "REQUIRES")
REFUSED = {"DRAFT": "speculative decoding with a draft model is not supported by athanor",
           "RENDERER": "Ollama's built-in prompt renderers are not available here; give a TEMPLATE instead",
           "PARSER": "Ollama's built-in output parsers are not available here"}
_SEMVER = re.compile(r"v?(\d+)\.(\d+)\.(\d+)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")


class ModelfileWarning(UserWarning):
    """Something Ollama accepts that means nothing (or is deprecated) here; `athanor create` prints it."""


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
    requires: str | None = None  # REQUIRES: the Ollama version the author needed (semver, no "v")
    runtime_parameters: dict[str, Any] = field(default_factory=dict)  # accepted, no effect (RUNTIME_PARAMETERS)


def parse_modelfile(path: str | Path) -> Modelfile:
    """Read and parse the Modelfile at `path`; errors are `ModelfileError` with `path:line`."""
    try:
        text = decode_modelfile(Path(path).read_bytes())
    except FileNotFoundError:
        raise AthanorError(f"Modelfile not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AthanorError(f"cannot read Modelfile {path}: {e}") from None
    return parse_modelfile_text(text, str(path))


def decode_modelfile(data: bytes) -> str:
    """Bytes -> text as Ollama reads them: a UTF-16 (LE/BE) or UTF-8 byte-order mark picks the encoding."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    return data.decode("utf-8-sig")


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
        if keyword in REFUSED:
            raise ModelfileError(path, lineno, keyword, REFUSED[keyword])
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
    if not rest.strip():
        raise ModelfileError(path, lineno, keyword, "missing value")
    return rest.rstrip(), i + 1


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
    return "\n".join(chunks), i + 1  # kept exactly, as Ollama does (no newline dropped at either end)


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
    elif keyword == "REQUIRES":
        if not _SEMVER.fullmatch(value.strip()):
            raise ModelfileError(mf.path, lineno, "REQUIRES", f"must be a version such as 0.14.0, got {value!r}")
        mf.requires = value.strip().removeprefix("v")
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
    where = f"{mf.path}:{lineno}: PARAMETER {name}"
    if name in DEPRECATED_PARAMETERS:
        warnings.warn(f"{where} is deprecated (Ollama ignores it too); dropped", ModelfileWarning, stacklevel=2)
        return
    if name in RUNTIME_PARAMETERS:
        kind, why = RUNTIME_PARAMETERS[name]
        mf.runtime_parameters[name] = _typed(mf, name, kind, raw, lineno)
        warnings.warn(f"{where} is accepted but has no effect here: {why}", ModelfileWarning, stacklevel=2)
        return
    kind = PARAMETER_TYPES.get(name)
    if kind is None:
        known = [*PARAMETER_TYPES, *RUNTIME_PARAMETERS]
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)  # a typo, not any name sharing "num_"
        hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(known)}"
        raise ModelfileError(mf.path, lineno, "PARAMETER", f"unknown parameter {name!r}{hint}")
    if name == "stop":
        mf.parameters.setdefault("stop", []).append(raw)
        return
    mf.parameters[name] = _typed(mf, name, kind, raw, lineno)


def _typed(mf: Modelfile, name: str, kind: type, raw: str, lineno: int) -> Any:
    if kind is bool:
        if raw.lower() in ("true", "false", "1", "0"):
            return raw.lower() in ("true", "1")
        raise ModelfileError(mf.path, lineno, "PARAMETER", f"{name} expects true or false, got {raw!r}")
    try:
        return kind(raw)
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
    for name, value in mf.runtime_parameters.items():
        out.append(f"PARAMETER {name} {str(value).lower() if isinstance(value, bool) else value}")
    out += [f"ADAPTER {_quote(a)}" for a in mf.adapters]
    if mf.requires is not None:
        out.append(f"REQUIRES {mf.requires}")
    out += [f"MESSAGE {m['role']} {_quote(m['content'])}" for m in mf.messages]
    if mf.license is not None:
        out.append(f"LICENSE {_quote(mf.license)}")
    return "\n".join(out) + "\n"


def _quote(value: str) -> str:
    """The shortest form that parses back to exactly `value`."""
    if "\n" in value or "\r" in value:
        if '"""' in value:
            raise AthanorError('cannot write a multi-line Modelfile value that contains """')
        return f'"""{value}"""'
    if value and value == value.strip() and not value.startswith('"'):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
