"""Modelfile parser: every instruction, the three quoting forms, comments, and each error with its PATH:LINE."""

from __future__ import annotations

from pathlib import Path

import pytest

from athanor.errors import AthanorError
from athanor.models.modelfile import (
    Modelfile,
    ModelfileError,
    parse_modelfile,
    parse_modelfile_text,
    render_modelfile_text,
)

FULL = '''# Mario, from the built-in model
from smollm2

PARAMETER temperature 0.7
parameter num_ctx 4096
PARAMETER top_k 40
PARAMETER top_p 0.95
PARAMETER min_p 0.05
PARAMETER repeat_penalty 1.1
PARAMETER repeat_last_n 64
PARAMETER presence_penalty 0.5
PARAMETER frequency_penalty -0.5
PARAMETER seed 42
PARAMETER num_predict 128
PARAMETER stop <|im_end|>
PARAMETER stop "User:"
  # an indented comment
TEMPLATE """{% for m in messages %}
<|{{ m['role'] }}|>
{{ m['content'] }}{% endfor %}"""
System """
You are Mario.
# not a comment inside a block
  Indented.
"""
ADAPTER ./my-lora
adapter "/abs/other lora"
MESSAGE user "Who are you?"
MESSAGE Assistant It's-a me, Mario!
LICENSE """MIT
line two"""
'''


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "Modelfile"
    path.write_text(text)
    return path


def test_full_modelfile(tmp_path):
    mf = parse_modelfile(write(tmp_path, FULL))
    assert mf.from_ == "smollm2" and mf.from_line == 2
    assert mf.parameters == {
        "temperature": 0.7,
        "num_ctx": 4096,
        "top_k": 40,
        "top_p": 0.95,
        "min_p": 0.05,
        "repeat_penalty": 1.1,
        "repeat_last_n": 64,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "seed": 42,
        "num_predict": 128,
        "stop": ["<|im_end|>", "User:"],
    }
    assert type(mf.parameters["num_ctx"]) is int and type(mf.parameters["temperature"]) is float
    assert mf.template == "{% for m in messages %}\n<|{{ m['role'] }}|>\n{{ m['content'] }}{% endfor %}"
    assert mf.system == "\nYou are Mario.\n# not a comment inside a block\n  Indented.\n"  # newlines kept, as Ollama
    assert mf.adapters == ["./my-lora", "/abs/other lora"] and mf.adapter_lines == [26, 27]
    assert mf.messages == [
        {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": "It's-a me, Mario!"},
    ]
    assert mf.license == "MIT\nline two"
    assert mf.path == str(tmp_path / "Modelfile")


def test_quoting_forms():
    mf = parse_modelfile_text(
        'FROM "./my model.gguf"\n'
        'SYSTEM "say \\"hi\\" \\\\ bye"  \n'
        'PARAMETER stop "  padded  "\n'
        'PARAMETER stop """one line"""\n'
        'MESSAGE user """a\n\nb"""\n'
        'TEMPLATE {{ messages[0]["content"] }}\n'
    )
    assert mf.from_ == "./my model.gguf"
    assert mf.system == 'say "hi" \\ bye'
    assert mf.parameters["stop"] == ["  padded  ", "one line"]
    assert mf.messages == [{"role": "user", "content": "a\n\nb"}]
    assert mf.template == '{{ messages[0]["content"] }}'


def test_later_values_win_and_order_is_free():
    mf = parse_modelfile_text("SYSTEM one\nPARAMETER seed 1\nFROM x\nSYSTEM two\nPARAMETER seed 2\n")
    assert (mf.from_, mf.from_line, mf.system, mf.parameters) == ("x", 3, "two", {"seed": 2})


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "FROM x\nFOO bar\n",
            "M:2: FOO: unknown instruction; expected one of FROM, PARAMETER, TEMPLATE, SYSTEM, ADAPTER, LICENSE, MESSAGE, REQUIRES",
        ),
        ("# only a comment\nSYSTEM hi\n", "M:1: FROM: missing FROM (e.g. `FROM smollm2` or `FROM ./model.gguf`)"),
        ("FROM a\n\nFROM b\n", "M:3: FROM: second FROM (the first is on line 1)"),
        (
            "FROM a\nPARAMETER temprature 0.5\n",
            "M:2: PARAMETER: unknown parameter 'temprature' (did you mean 'temperature'?)",
        ),
        ("FROM a\nPARAMETER num_ctx 4k\n", "M:2: PARAMETER: num_ctx expects an integer, got '4k'"),
        ("FROM a\nPARAMETER num_ctx 1.5\n", "M:2: PARAMETER: num_ctx expects an integer, got '1.5'"),
        ("FROM a\nPARAMETER top_p high\n", "M:2: PARAMETER: top_p expects a number, got 'high'"),
        ("FROM a\nPARAMETER seed\n", "M:2: PARAMETER: expected PARAMETER <name> <value>"),
        ('FROM a\n\nSYSTEM """\nhello\n', 'M:3: SYSTEM: unterminated """ (no closing """ before end of file)'),
        ('FROM a\nSYSTEM "hello\n', 'M:2: SYSTEM: unterminated quoted string (use """ for multi-line values)'),
        ('FROM a\nSYSTEM "hello" world\n', "M:2: SYSTEM: unexpected text after closing quote"),
        ('FROM a\nSYSTEM """x\n""" world\n', 'M:3: SYSTEM: unexpected text after closing """'),
        ("FROM a\nMESSAGE bot hello\n", "M:2: MESSAGE: role must be one of system, user, assistant, got 'bot'"),
        ("FROM a\nMESSAGE user\n", "M:2: MESSAGE: expected MESSAGE <role> <content>"),
        ("FROM\n", "M:1: FROM: missing value"),
    ],
)
def test_errors_name_file_and_line(text, message):
    with pytest.raises(ModelfileError) as e:
        parse_modelfile_text(text, "M")
    assert str(e.value) == message
    assert "\n" not in str(e.value)


def test_error_uses_the_real_path(tmp_path):
    path = write(tmp_path, "FROM a\n# c\nPARAMETER stop\n")
    with pytest.raises(ModelfileError, match=rf"^{path}:3: PARAMETER: "):
        parse_modelfile(path)


def test_go_template_is_accepted_and_checked():
    mf = parse_modelfile_text('FROM a\nTEMPLATE """{{ if .System }}{{ .System }}{{ end }}{{ .Prompt }}"""\n', "M")
    assert mf.template == "{{ if .System }}{{ .System }}{{ end }}{{ .Prompt }}"
    with pytest.raises(ModelfileError, match=r"^M:2: TEMPLATE: Go template 1:\d+: unexpected EOF"):
        parse_modelfile_text("FROM a\nTEMPLATE {{- range .Messages }}x\n", "M")
    with pytest.raises(ModelfileError, match=r"^M:2: TEMPLATE: Go template 1:4: function 'upper' not defined"):
        parse_modelfile_text('FROM a\nTEMPLATE "{{ upper .Prompt }}"\n', "M")


def test_bad_jinja_is_refused():
    with pytest.raises(ModelfileError, match=r"^M:3: TEMPLATE: invalid Jinja template: .*\(template line 2\)$"):
        parse_modelfile_text('FROM a\n\nTEMPLATE """{% for m in messages %}\n{{ m.content }"""\n', "M")


def test_missing_file_is_one_line_error(tmp_path):
    with pytest.raises(AthanorError, match="^Modelfile not found: "):
        parse_modelfile(tmp_path / "nope")


def test_render_round_trips(tmp_path):
    mf = parse_modelfile(write(tmp_path, FULL))
    again = parse_modelfile_text(render_modelfile_text(mf), mf.path)
    assert again.from_line == 1
    mf.from_line, mf.adapter_lines, again.adapter_lines = 1, [], []
    assert again == mf


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "  spaces  ",
        '"starts with quote',
        'back\\slash "and" quotes',
        "\nleading newline",
        "trailing\n",
        "multi\n  line\n\n",
        "",
        "# hash",
    ],
)
def test_render_quotes_any_value(value):
    mf = Modelfile(from_="x", system=value, messages=[{"role": "user", "content": value}], parameters={"stop": [value]})
    again = parse_modelfile_text(render_modelfile_text(mf))
    assert again.system == value and again.messages[0]["content"] == value and again.parameters["stop"] == [value]
