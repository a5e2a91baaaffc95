"""Ollama Go templates: the templates Ollama ships, rendered for a short chat, against prompts written out by hand
(and, for ChatML, against athanor's own Jinja rendering); Go's text/template rules; one-line errors."""

import json
from pathlib import Path

import pytest

from athanor.errors import AthanorError
from athanor.text.gotemplate import GoTemplateError, is_go_template, parse, render_prompt
from athanor.text.tokenizer import Tokenizer

DATA = Path(__file__).parent / "data_gotemplate"

CHAT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello, how are you?"},
    {"role": "assistant", "content": "I'm doing great. How can I help you today?"},
    {"role": "user", "content": "I'd like to show off how chat templating works!"},
]
S, U1, A1, U2 = (m["content"] for m in CHAT)

# the weather conversation of Ollama's server/testdata/tools (OpenAI shape: arguments as a JSON string)
TOOL_CHAT = [
    {"role": "system", "content": "You are a knowledgeable assistant. You can answer questions and perform tasks."},
    {"role": "user", "content": "What's the weather like today in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "get_current_weather", "arguments": json.dumps({"location": "Paris, France", "format": "celsius"})}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "22"},
    {"role": "assistant", "content": "The current temperature in Paris, France is 22 degrees Celsius."},
    {"role": "user", "content": "What's the weather like today in San Francisco and Toronto?"},
]
TOOLS = [{"type": "function", "function": {
    "name": "get_current_weather", "description": "Get the current weather",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
        "format": {"type": "string", "enum": ["celsius", "fahrenheit"],
                   "description": "The temperature unit to use. Infer this from the user's location."}},
        "required": ["location", "format"]}}}]
# Go's json.Marshal of Ollama's api.Tool: struct field order (type, required, properties), map keys sorted
TOOL_JSON = ('{"type":"function","function":{"name":"get_current_weather","description":"Get the current weather",'
             '"parameters":{"type":"object","required":["location","format"],"properties":{"format":{"type":"string",'
             '"description":"The temperature unit to use. Infer this from the user\'s location.","enum":["celsius",'
             '"fahrenheit"]},"location":{"type":"string","description":"The city and state, e.g. San Francisco, CA"}}}}}')


def load(name: str):
    source_line, text = (DATA / name).read_text().split("\n", 1)
    assert source_line.startswith("# source: ollama/ollama ")
    return parse(text)


def test_chatml_matches_athanors_jinja_chatml(tiny_hf_dir):
    expected = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello, how are you?"
                "<|im_end|>\n<|im_start|>assistant\nI'm doing great. How can I help you today?<|im_end|>\n"
                "<|im_start|>user\nI'd like to show off how chat templating works!<|im_end|>\n<|im_start|>assistant\n")
    jinja = Tokenizer.from_hf_dir(tiny_hf_dir).apply_chat_template(CHAT)
    go = render_prompt(load("chatml.gotmpl"), CHAT)
    assert go == jinja == expected


@pytest.mark.parametrize("name, expected", [
    ("llama3-instruct.gotmpl",
     (f"<|start_header_id|>system<|end_header_id|>\n\n{S}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{U1}"
     f"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{A1}<|eot_id|><|start_header_id|>user"
     f"<|end_header_id|>\n\n{U2}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")),
    # gemma has no system turn: the system text opens the first user turn
    ("gemma-instruct.gotmpl",
     (f"<start_of_turn>user\n{S}\n{U1}<end_of_turn>\n<start_of_turn>model\n{A1}<end_of_turn>\n"
     f"<start_of_turn>user\n{U2}<end_of_turn>\n<start_of_turn>model\n")),
    ("mistral-instruct.gotmpl", f"[INST] {S}\n\n{U1}[/INST] {A1}</s>[INST] {U2}[/INST]"),
])
def test_modern_templates_render_a_chat(name, expected):
    template = load(name)
    assert template.uses_messages
    assert render_prompt(template, CHAT) == expected


def test_legacy_template_renders_history_turn_by_turn():
    """Ollama's rule: one execution per user turn with its reply as .Response; the open turn ends at .Response."""
    template = load("phi-3-legacy.gotmpl")
    assert not template.uses_messages
    expected = (f"<|system|>\n{S}<|end|>\n<|user|>\n{U1}<|end|>\n<|assistant|>\n{A1}<|end|>"
                f"<|user|>\n{U2}<|end|>\n<|assistant|>\n")
    assert render_prompt(template, CHAT) == expected
    assert render_prompt(template, CHAT[1:2]) == f"<|user|>\n{U1}<|end|>\n<|assistant|>\n"
    # a system message in mid-history closes the turn before it and opens the next one
    chat = CHAT[1:3] + [{"role": "system", "content": "Be brief."}, CHAT[3]]
    assert render_prompt(template, chat) == (f"<|user|>\n{U1}<|end|>\n<|assistant|>\n{A1}<|end|><|system|>\n"
                                             f"Be brief.<|end|>\n<|user|>\n{U2}<|end|>\n<|assistant|>\n")


def test_legacy_template_without_response_gets_it_appended():
    template = parse("{{ if .System }}[{{ .System }}] {{ end }}Q: {{ .Prompt }} A: ")
    assert template.vars == ["prompt", "response", "system"]  # Ollama's Vars after Parse appends .Response
    assert render_prompt(template, CHAT) == f"[{S}] Q: {U1} A: {A1}Q: {U2} A: "


def test_legacy_cut_drops_everything_after_response_even_inside_blocks():
    template = parse("{{ range .Stops }}{{ . }}{{ end }}<u>{{ .Prompt }}</u>{{ if .Prompt }}<a>{{ .Response }}</a>"
                     "{{ end }}<end>")
    out = render_prompt(template, CHAT[1:])
    assert out == f"<u>{U1}</u><a>{A1}</a><end><u>{U2}</u><a>"


def test_llama32_tools_template_matches_ollamas_prompt():
    expected = (
        "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n\n"
        f"{TOOL_CHAT[0]['content']}When you receive a tool call response, use the output to format an answer to the "
        "orginal user question.\n\nYou are a helpful assistant with tool calling capabilities.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat's the weather like today in Paris?<|eot_id|>"
        '<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "get_current_weather", "parameters": '
        '{"format":"celsius","location":"Paris, France"}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>\n\n'
        "22<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nThe current temperature in Paris, France is 22 "
        "degrees Celsius.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, please "
        "respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n\n"
        'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}. '
        f"Do not use variables.\n\n{TOOL_JSON}\n\nWhat's the weather like today in San Francisco and Toronto?"
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert render_prompt(load("llama3.2-tools.gotmpl"), TOOL_CHAT, TOOLS) == expected
    # without tools the same template leaves the tool instructions out
    plain = render_prompt(load("llama3.2-tools.gotmpl"), CHAT)
    assert "tool" not in plain and plain.endswith(f"\n\n{U2}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


def test_mistral_tools_template_prints_tools_and_calls_as_json():
    expected = (
        "[INST] What's the weather like today in Paris?[/INST][TOOL_CALLS] [{\"name\": \"get_current_weather\", "
        "\"arguments\": {\"format\":\"celsius\",\"location\":\"Paris, France\"}}]</s>[TOOL_RESULTS] {\"content\": 22}"
        "[/TOOL_RESULTS] The current temperature in Paris, France is 22 degrees Celsius.</s>"
        f"[AVAILABLE_TOOLS] [{TOOL_JSON}][/AVAILABLE_TOOLS][INST] {TOOL_CHAT[0]['content']}\n\n"
        "What's the weather like today in San Francisco and Toronto?[/INST]")
    assert render_prompt(load("mistral-tools.gotmpl"), TOOL_CHAT, TOOLS) == expected


def test_messages_are_collated_like_ollama():
    template = parse("{{ .System }}|{{ range .Messages }}{{ .Role }}={{ .Content }};{{ end }}")
    msgs = [{"role": "system", "content": "a"}, {"role": "system", "content": "b"}, {"role": "user", "content": "x"},
            {"role": "user", "content": [{"type": "text", "text": "y"}]}, {"role": "tool", "content": "1"},
            {"role": "tool", "content": "2"}]
    assert render_prompt(template, msgs) == "a\n\nb|system=a\n\nb;user=x\n\ny;tool=1;tool=2;"


def test_shipped_templates_are_recognised_as_go_and_jinja_is_not(tiny_hf_dir):
    for path in DATA.glob("*.gotmpl"):
        assert is_go_template(path.read_text()), path.name
    assert not is_go_template(Tokenizer.from_hf_dir(tiny_hf_dir).chat_template)
    assert not is_go_template("plain text {{ not a go action")


@pytest.mark.parametrize("source, data, expected", [
    ("a  {{- .X -}}  b {{- /* gone\n */ -}} c", {"X": 1}, "a1bc"),
    ("{{ .M.k }}|{{ .Missing }}|{{ $.M.k }}", {"M": {"k": "v"}}, "v|<no value>|v"),
    ("{{ if .E }}e{{ else if .Z }}z{{ else if .S }}{{ .S }}{{ else }}none{{ end }}",
     {"E": [], "Z": 0, "S": "s"}, "s"),
    ("{{ with .M }}{{ .k }}{{ else }}empty{{ end }}{{ with .E }}x{{ else }}-{{ end }}",
     {"M": {"k": 1}, "E": {}}, "1-"),
    (("{{ range $i, $v := .L }}{{ if eq $i 1 }}{{ continue }}{{ end }}{{ if gt $i 2 }}{{ break }}{{ end }}"
     "{{ $i }}{{ $v }} {{ else }}empty{{ end }}{{ range .E }}x{{ else }}none{{ end }}"),
     {"L": ["a", "b", "c", "d", "e"], "E": []}, "0a 2c none"),
    ("{{ range $k, $v := .M }}{{ $k }}={{ $v }},{{ end }}", {"M": {"b": 2, "a": 1}}, "a=1,b=2,"),
    ("{{ $x := 1 }}{{ range .L }}{{ $x = . }}{{ end }}{{ $x }}{{ if true }}{{ $y := 5 }}{{ $y }}{{ end }}",
     {"L": [7, 8]}, "85"),
    ("{{ eq .R \"user\" \"tool\" }} {{ ne 1 2 }} {{ lt 1 2 }} {{ le \"b\" \"a\" }} {{ gt 2.5 1 }} {{ ge 2 2 }}",
     {"R": "tool"}, "true true true false true true"),
    ("{{ and 1 \"\" 2 }}|{{ or 0 \"\" \"x\" }}|{{ not .N }}|{{ and .N .N.x }}", {"N": None}, "|x|true|<no value>"),
    # len and slice of a string count bytes, as in Go ("é" is two)
    ("{{ len .S }} {{ len .L }} {{ index .L 1 }} {{ index .M \"k\" }} {{ slice .L 1 }} {{ slice .S 0 3 }}",
     {"S": "héllo", "L": [1, 2, 3], "M": {"k": "v"}}, "6 3 2 v [2 3] hé"),
    ("{{ print 1 2 \"a\" \"b\" nil }}|{{ println \"x\" 3 }}|{{ printf \"%s=%d %q %5.2f %v %x\" \"k\" 7 \"q\" 2.5 .L 255 }}",
     {"L": [1, "a"]}, "1 2ab<nil>|x 3\n|k=7 \"q\"  2.50 [1 a] ff"),
    ("{{ printf \"%d\" }}|{{ printf \"%d\" 1 2 }}", {}, "%!d(MISSING)|1%!(EXTRA int=2)"),
    ("{{ json .V }}", {"V": {"b": [1, 2.5, 1e21, 1e-7, None, True], "a": "<&>\n\"é"}},
     '{"a":"\\u003c\\u0026\\u003e\\n\\"é","b":[1,2.5,1e+21,1e-7,null,true]}'),
    ("{{ .F }} {{ .G }} {{ .H }} {{ 1e6 }} {{ 0x1F }} {{ 'a' }} {{ `raw\\n` }} {{ \"tab\\t\" }}",
     {"F": 1000000.0, "G": 0.0001, "H": 123456.5}, "1e+06 0.0001 123456.5 1e+06 31 97 raw\\n tab\t"),
    ("{{ .L | len | printf \"%d items\" }} {{ \"a\" | eq \"a\" }} {{ (index .L 0).k }}", {"L": [{"k": "K"}]},
     "1 items true K"),
])
def test_go_semantics(source, data, expected):
    assert parse(source).render(data | {"Response": ""}) == expected


@pytest.mark.parametrize("source, message", [
    ("hello {{ .Prompt ", "1:7: unclosed action"),
    ("{{ .Prompt }}\n  {{ upper .Prompt }}", "2:6: function 'upper' not defined"),
    ('{{ template "x" . }}', "1:1: {{template}} is not supported"),
    ('{{ define "x" }}y{{ end }}', "1:1: {{define}} is not supported"),
    ("{{ if .X }}a{{ end }}{{ end }}", "1:22: unexpected {{end}}"),
    ("{{ range .X }}a", "unexpected EOF: an {{if}}/{{range}}/{{with}} has no {{end}}"),
    ("{{ if .X }}{{ else }}{{ else }}{{ end }}", "1:22: expected {{end}}; found {{else}}"),
    ("{{ .X }}{{ else }}", "1:9: unexpected {{else}}"),
    ("{{ $x }}", "1:4: undefined variable '$x'"),
    ("{{ $x = 1 }}", "1:4: undefined variable '$x'"),
    ("{{ break }}", "1:1: {{break}} outside {{range}}"),
    ('{{ html "<" }}', "1:4: function 'html' is not supported"),
    ('{{ "a }}', "1:4: unterminated quoted string"),
    ("{{ (len .X }}", "1:4: unclosed left paren"),
    ("{{ .X | }}", "1:7: missing command after |"),
    ("{{ .X | 1 }}", "1:9: non executable command in pipeline stage 2"),
    ("{{ /* x */ }}", "unexpected '/' in action"),
    ("{{/* open", "1:1: unclosed comment"),
    ("{{ .X @ }}", "1:7: unexpected '@' in action"),
    ('{{ "a".X }}', "1:4: unexpected . after term"),
    ("{{ if }}x{{ end }}", "1:1: missing value for if"),
])
def test_parse_errors_are_one_line_with_position(source, message):
    with pytest.raises(GoTemplateError) as info:
        parse(source)
    text = str(info.value)
    assert "\n" not in text and message in text, text
    assert isinstance(info.value, AthanorError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("source, data, message", [
    ("{{ index .L 5 }}", {"L": [1]}, "1:4: error calling index: index out of range: 5"),
    ("{{ .A.B }}", {}, "1:4: nil pointer evaluating interface {}.B"),
    ("{{ len 3 }}", {}, "error calling len: len of type int"),
    ('{{ lt 1 "a" }}', {}, "incompatible types for comparison"),
    ("{{ nil }}", {}, "1:4: nil is not a command"),
    ("{{ .X 1 }}", {"X": 1}, "can't give argument to non-function"),
    ("{{ range .S }}{{ end }}", {"S": "abc"}, "range can't iterate over"),
])
def test_execution_errors_are_one_line_with_position(source, data, message):
    with pytest.raises(GoTemplateError) as info:
        parse(source).render(data | {"Response": ""})
    assert "\n" not in str(info.value) and message in str(info.value), str(info.value)


def test_message_fields_follow_ollamas_api_message():
    template = parse("{{ range .Messages }}{{ .Role }}:{{ .Content }}:{{ .ToolName }}{{ .Bogus }}{{ end }}")
    with pytest.raises(GoTemplateError, match="can't evaluate field Bogus in type api.Message"):
        render_prompt(template, CHAT[1:2])
    calls = parse("{{ range .Messages }}{{ range .ToolCalls }}{{ .Function.Name }}{{ .Function.Arguments }}"
                  "{{ index .Function.Arguments \"n\" }}{{ end }}{{ end }}")
    msg = {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": '{"n": 1000000}'}}]}
    # arguments decode as Go does (numbers are float64): JSON prints 1000000, %v prints 1e+06
    assert render_prompt(calls, [msg]) == 'f{"n":1000000}1e+06'
    with pytest.raises(GoTemplateError, match="tool call arguments are not valid JSON"):
        render_prompt(calls, [msg | {"tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}])


def test_random_templates_give_output_or_one_line_error_never_a_traceback():
    import random

    rng = random.Random(0)
    pieces = ["{{", "}}", "{{- ", " -}}", " ", ".X", ".Messages", "$", "$x", ":=", "=", "if", "else", "end", "range",
              "with", "(", ")", "|", '"s"', "1", "2.5", "eq", "len", "index", "slice", "printf", "json", "and", "not",
              "nil", "break", ",", "$i", "/*", "*/", "\n", "t", ".Role", ".", "print", "template", "foo", ".Tools"]
    data = {"X": [1, "a", None, {"k": 2}], "Messages": [], "Response": ""}
    outcomes = {"ok": 0, "error": 0}
    for _ in range(3000):
        source = "".join(rng.choice(pieces) + rng.choice(["", " "]) for _ in range(rng.randint(1, 12)))
        try:
            parse(source).render(data)
            outcomes["ok"] += 1
        except GoTemplateError as e:
            assert "\n" not in str(e) and str(e).startswith("Go template"), (source, str(e))
            outcomes["error"] += 1
    assert outcomes["ok"] > 100 and outcomes["error"] > 100  # both paths were exercised


def test_tool_parameters_are_go_structs_and_maps():
    """command-r style: range over the Properties map (sorted keys) and read struct fields of each property."""
    template = parse("{{ range .Messages }}{{ end }}{{ range .Tools }}def {{ .Function.Name }}("
                     "{{ range $name, $p := .Function.Parameters.Properties }}{{ $name }}: {{ $p.Type }}, {{ end }})"
                     "{{ .Function.Parameters.Required }}{{ end }}")
    assert render_prompt(template, CHAT, TOOLS) == "def get_current_weather(format: string, location: string, )" \
                                                   "[location format]"
    with pytest.raises(GoTemplateError, match="can't evaluate field Bogus in type api.ToolProperty"):
        render_prompt(parse("{{ range .Tools }}{{ .Function.Parameters.Properties.format.Bogus }}{{ end }}"
                            "{{ range .Messages }}{{ end }}"), CHAT, TOOLS)
