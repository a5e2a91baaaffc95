"""The cases of Ollama's own parser tests (ollama/ollama parser/parser_test.go), as a table: what Ollama accepts we
accept with the same values; what it rejects we reject. Where athanor differs on purpose, the case says why
(e.g. DRAFT is refused: there is no speculative decoding here)."""

from __future__ import annotations

import warnings

import pytest

from athanor.errors import AthanorError
from athanor.models.modelfile import ModelfileWarning, parse_modelfile, parse_modelfile_text

LLAMA3 = ("{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
          "{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>{{ end }}"
          "<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>")


def parse(text: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModelfileWarning)
        return parse_modelfile_text(text, "M")


# (Modelfile text, attribute, expected value) - TestParseFileFrom / TrimSpace / Quoted / Messages
ACCEPTED = [
    ('\nFROM model1\nADAPTER adapter1\nLICENSE MIT\nTEMPLATE """' + LLAMA3 + '"""    \n', "template", LLAMA3),
    ('FROM "     model 1"\n', "from_", "     model 1"),
    ('FROM "FOO  BAR  "', "from_", "FOO  BAR  "),
    ("FROM     FOOO BAR    ", "from_", "FOOO BAR"),
    ("FROM /what/is/the path ", "from_", "/what/is/the path"),
    ("FROM llama3:7b-instruct-q4_K_M", "from_", "llama3:7b-instruct-q4_K_M"),
    ("PARAMETER temperature 0.5\nFROM foo", "parameters", {"temperature": 0.5}),
    ('FROM foo\nLICENSE "MIT       "\n', "license", "MIT       "),
    ("FROM foo\nADAPTER      adapter3\n", "adapters", ["adapter3"]),
    ('FROM foo\nTEMPLATE """   {{ .Prompt }}   """    \n', "template", "   {{ .Prompt }}   "),
    ('FROM foo\nSYSTEM """\nThis is a\nmultiline system.\n"""\n', "system", "\nThis is a\nmultiline system.\n"),
    ('FROM foo\nSYSTEM """\nThis is a\nmultiline system."""\n', "system", "\nThis is a\nmultiline system."),
    ('FROM foo\nSYSTEM """This is a\nmultiline system."""\n', "system", "This is a\nmultiline system."),
    ('FROM foo\nSYSTEM """This is a multiline system."""\n', "system", "This is a multiline system."),
    ('FROM foo\nSYSTEM """\nThis is a multiline system with "quotes".\n"""\n', "system",
     '\nThis is a multiline system with "quotes".\n'),
    ('FROM foo\nSYSTEM """"""\n', "system", ""),
    ('FROM foo\nSYSTEM ""\n', "system", ""),
    ('FROM foo\nSYSTEM "\'"\n', "system", "'"),
    ('FROM foo\nTEMPLATE """\n{{ .Prompt }}\n"""', "template", "\n{{ .Prompt }}\n"),
    ("FROM foo\nMESSAGE system You are a file parser. Always parse things.", "messages",
     [{"role": "system", "content": "You are a file parser. Always parse things."}]),
    ("FROM foo\nMESSAGE system You are a file parser.\nMESSAGE user Hey there!\nMESSAGE assistant Hello!\n",
     "messages", [{"role": "system", "content": "You are a file parser."}, {"role": "user", "content": "Hey there!"},
                  {"role": "assistant", "content": "Hello!"}]),
    ('FROM foo\nMESSAGE system """\nYou are a multiline file parser. Always parse things.\n"""\n', "messages",
     [{"role": "system", "content": "\nYou are a multiline file parser. Always parse things.\n"}]),
    ("\n# comment\nFROM foo\n\t", "from_", "foo"),
    ("FROM foo\nREQUIRES 0.14.0\n", "requires", "0.14.0"),
    ("FROM foo\nREQUIRES v0.6.2-rc1\n", "requires", "0.6.2-rc1"),
]


@pytest.mark.parametrize("text, attr, value", ACCEPTED)
def test_ollama_accepted_cases(text, attr, value):
    assert getattr(parse(text), attr) == value


# TestParseFileParameters: every name Ollama accepts, and the value it reads
PARAMETERS = {
    "num_ctx 1": ("num_ctx", 1), "seed 1": ("seed", 1), "num_predict 1": ("num_predict", 1), "top_k 1": ("top_k", 1),
    "top_p 1.0": ("top_p", 1.0), "min_p 0.05": ("min_p", 0.05), "repeat_last_n 1": ("repeat_last_n", 1),
    "temperature 1.0": ("temperature", 1.0), "repeat_penalty 1.0": ("repeat_penalty", 1.0),
    "presence_penalty 1.0": ("presence_penalty", 1.0), "frequency_penalty 1.0": ("frequency_penalty", 1.0),
    "stop ### User:": ("stop", ["### User:"]), "stop ### User: ": ("stop", ["### User:"]),
    'stop "### User:"': ("stop", ["### User:"]), 'stop "### User: "': ("stop", ["### User: "]),
    'stop """### User:"""': ("stop", ["### User:"]), 'stop """### User:\n"""': ("stop", ["### User:\n"]),
    "stop <|endoftext|>": ("stop", ["<|endoftext|>"]), "stop <|eot_id|>": ("stop", ["<|eot_id|>"]),
    "stop </s>": ("stop", ["</s>"]),
}
RUNTIME = {"num_batch 1": ("num_batch", 1), "num_gpu 1": ("num_gpu", 1), "main_gpu 1": ("main_gpu", 1),
           "use_mmap true": ("use_mmap", True), "num_thread 1": ("num_thread", 1), "num_keep 1": ("num_keep", 1),
           "typical_p 1.0": ("typical_p", 1.0), "numa true": ("numa", True),
           "draft_num_predict 6": ("draft_num_predict", 6)}


@pytest.mark.parametrize("line", PARAMETERS)
def test_sampling_parameters(line):
    name, value = PARAMETERS[line]
    assert parse(f"FROM foo\nPARAMETER {line}\n").parameters == {name: value}


@pytest.mark.parametrize("line", RUNTIME)
def test_runtime_parameters_are_accepted_with_a_note(line):
    name, value = RUNTIME[line]
    with pytest.warns(ModelfileWarning, match=f"PARAMETER {name} is accepted but has no effect here"):
        mf = parse_modelfile_text(f"FROM foo\nPARAMETER {line}\n", "M")
    assert mf.runtime_parameters == {name: value} and mf.parameters == {}


@pytest.mark.parametrize("name", ["mirostat", "mirostat_tau", "mirostat_eta", "penalize_newline", "use_mlock"])
def test_deprecated_parameters_warn_and_are_dropped(name):
    with pytest.warns(ModelfileWarning, match=f"PARAMETER {name} is deprecated"):
        mf = parse_modelfile_text(f"FROM foo\nPARAMETER {name} 1\nPARAMETER temperature 0\n", "M")
    assert mf.parameters == {"temperature": 0.0}


# rejected by Ollama too (TestParseFileParametersMissingValue, BadCommand, Messages, Quoted); DRAFT/RENDERER/PARSER
# are Ollama instructions athanor refuses with a reason
REJECTED = [
    ("", "missing FROM"),
    ("PARAMETER temperature 1", "missing FROM"),
    ("FROM foo\nPARAMETER param1\n", "expected PARAMETER <name> <value>"),
    ("FROM foo\nBADCOMMAND param1 value1\n", "M:2: BADCOMMAND: unknown instruction"),
    ("FROM foo\nMESSAGE badguy I'm a bad guy!\n", "M:2: MESSAGE: role must be one of"),
    ("FROM foo\nMESSAGE system\n", "expected MESSAGE <role> <content>"),
    ('FROM foo\nSYSTEM """This is a multiline system.""\n', 'unterminated """'),
    ('FROM foo\nSYSTEM "\n', "unterminated quoted string"),
    ("FROM foo\nDRAFT ./assistant\n", "M:2: DRAFT: speculative decoding"),
    ("FROM foo\nRENDERER renderer1\n", "M:2: RENDERER: Ollama's built-in prompt renderers"),
    ("FROM foo\nPARSER parser1\n", "M:2: PARSER: Ollama's built-in output parsers"),
    ("FROM foo\nREQUIRES latest\n", "REQUIRES: must be a version such as 0.14.0"),
    ("FROM foo\nPARAMETER use_mmap maybe\n", "use_mmap expects true or false"),
]


@pytest.mark.parametrize("text, words", REJECTED)
def test_ollama_rejected_cases(text, words):
    with pytest.raises(AthanorError) as e:
        parse(text)
    assert words in str(e.value)


@pytest.mark.parametrize("name, hint", [("temprature", "did you mean 'temperature'?"),
                                        ("num_ctxx", "did you mean 'num_ctx'?"),
                                        ("num_experts", "known: num_ctx")])  # not close: the list, no guess
def test_did_you_mean_only_when_close(name, hint):
    with pytest.raises(AthanorError) as e:
        parse(f"FROM foo\nPARAMETER {name} 1\n")
    assert hint in str(e.value) and ("did you mean" in str(e.value)) == ("did you mean" in hint)


UTF16 = "FROM bob\nPARAMETER num_ctx 4096\nSYSTEM You are a utf16 file.\n"


@pytest.mark.parametrize("encoding, bom", [("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff"),
                                           ("utf-8", b"\xef\xbb\xbf")])
def test_byte_order_marks(tmp_path, encoding, bom):
    path = tmp_path / "Modelfile"
    path.write_bytes(bom + UTF16.encode(encoding))
    mf = parse_modelfile(path)
    assert (mf.from_, mf.parameters, mf.system) == ("bob", {"num_ctx": 4096}, "You are a utf16 file.")


FORMAT_CASES = [  # TestParseFileFormatParseFile: parse -> render -> parse gives the same Modelfile
    ('FROM foo\nADAPTER adapter1\nLICENSE MIT\nPARAMETER temperature 0.5\nTEMPLATE template1\n'
     'MESSAGE system You are a file parser. Always parse things.\nMESSAGE user Hey there!\n'),
    ('FROM foo\nLICENSE """\nVery long and boring legal text.\nBlah blah blah.\n"Oh look, a quote!"\n"""\n\n'
     'PARAMETER num_batch 8\nMESSAGE system """\nYou are a store greeter. Always respond with "Hello!".\n"""\n'),
    'FROM foo\nSYSTEM ""\nREQUIRES 0.14.0\n',
]


@pytest.mark.parametrize("text", FORMAT_CASES)
def test_render_round_trip(text):
    import dataclasses

    from athanor.models.modelfile import render_modelfile_text

    def fields(mf):  # line numbers differ after rendering; everything else must not
        return {k: v for k, v in dataclasses.asdict(mf).items() if k not in ("from_line", "adapter_lines")}

    mf = parse(text)
    assert fields(parse(render_modelfile_text(mf))) == fields(mf)
