"""athanor.text.tokenizer against transformers on real tokenizers trained here (byte-level BPE and SentencePiece-style
byte-fallback BPE), real public chat templates, and the built-in SmolLM2 GGUF's template. No hub access."""

from __future__ import annotations

import json
import random
from datetime import datetime
from pathlib import Path

import pytest
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from athanor.errors import AthanorError
from athanor.text.stop import StopMatcher
from athanor.text.tokenizer import CHATML_TEMPLATE, IncrementalDetokenizer, Tokenizer, _compile_template

transformers = pytest.importorskip("transformers")  # test-only reference; inference never imports it

# Repeated so BPE learns some multi-character Chinese/emoji merges; characters outside it (and the small vocab)
# guarantee others split into several byte tokens.
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world! How are you doing today? I am fine, thanks.",
    "我爱自然语言处理。今天天气很好。你好，世界！",
    "机器学习和深度学习是人工智能的重要分支。",
    "Emoji test: 😀 🚀 🎉 👍🏽 ❤️ and more 🤖",
    "Mixed: hello 你好 😀 world 世界 🚀",
    "    indented code with spaces\tand tabs\n",
] * 20

TEXTS = [
    "Hello world",
    " leading space",
    "   three leading spaces and  double  spaces ",
    "你好，世界！",
    "今天天气很好, 我们去公园吧",
    "😀🚀🎉",
    "family: 👨‍👩‍👧‍👦 flag: 🇫🇷 skin: 👍🏽",
    "mixed 你好 😀 world 世界 🚀 end",
    "unseen: ß ñ 中文 🦀 Ωmega",
    "line one\nline two\n\n  indented\ttab",
    "<|im_start|>user\nhi 你好<|im_end|>",
    "",
]

CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


# ------------------------------------------------------------------------------------------------ tokenizers


def train_byte_level() -> Backend:
    """GPT-2/Qwen/Llama-3 style: bytes mapped to printable characters, spaces as 'Ġ'."""
    tok = Backend(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=360, special_tokens=CHATML_SPECIALS + LLAMA_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def train_sentencepiece_style() -> Backend:
    """Llama-2/Mistral style: '▁' for spaces, <0xNN> byte fallback for characters outside the vocabulary, BOS added
    by the post-processor."""
    trained = Backend(models.BPE())
    trained.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=60,
                                  show_progress=False)
    trained.train_from_iterator(CORPUS, trainer)
    # BpeTrainer cannot add the 256 byte tokens as *normal* tokens, so rebuild the model with them in the vocab.
    trained_model = json.loads(trained.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"<0x{b:02X}>": 3 + b for b in range(256)}
    for token, _ in sorted(trained_model["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained_model["merges"]]
    tok = Backend(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    return tok


def write_dir(path: Path, backend: Backend, config: dict, generation: dict | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    backend.save(str(path / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False, **config}
    (path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    if generation is not None:
        (path / "generation_config.json").write_text(json.dumps(generation), encoding="utf-8")
    return path


def load_hf(path: Path):
    return transformers.AutoTokenizer.from_pretrained(str(path))


@pytest.fixture(scope="module")
def byte_level_backend() -> Backend:
    return train_byte_level()


@pytest.fixture(scope="module")
def byte_level_dir(tmp_path_factory, byte_level_backend) -> Path:
    ids = {t: byte_level_backend.token_to_id(t) for t in CHATML_SPECIALS}
    config = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
              "chat_template": CHATML_TEMPLATE}
    generation = {"eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]]}
    return write_dir(tmp_path_factory.mktemp("byte_level"), byte_level_backend, config, generation)


@pytest.fixture(scope="module")
def sp_dir(tmp_path_factory) -> Path:
    bos = {"__type": "AddedToken", "content": "<s>", "lstrip": False, "normalized": False, "rstrip": False,
           "single_word": False, "special": True}
    config = {"bos_token": bos, "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True}
    return write_dir(tmp_path_factory.mktemp("sp"), train_sentencepiece_style(), config, {"eos_token_id": 2})


@pytest.fixture(scope="module", params=["byte_level", "sp"])
def tok_dir(request, byte_level_dir, sp_dir) -> Path:
    return {"byte_level": byte_level_dir, "sp": sp_dir}[request.param]


# ------------------------------------------------------------------------------------------ loading, encode/decode


def test_from_hf_dir_reads_special_tokens_and_stop_ids(byte_level_dir, sp_dir):
    bl = Tokenizer.from_hf_dir(byte_level_dir)
    im_end, eot = bl.token_to_id("<|im_end|>"), bl.token_to_id("<|endoftext|>")
    assert (bl.bos_token_id, bl.eos_token_id, bl.add_bos_token) == (None, im_end, False)
    assert bl.stop_token_ids == {im_end, eot}
    assert bl.chat_template == CHATML_TEMPLATE
    assert bl.vocab_size == load_hf(byte_level_dir).__len__() == 360

    sp = Tokenizer.from_hf_dir(sp_dir)  # bos given as an AddedToken dict
    assert (sp.bos_token, sp.bos_token_id, sp.eos_token_id, sp.add_bos_token) == ("<s>", 1, 2, True)
    assert sp.stop_token_ids == {2}
    assert sp.chat_template is None
    assert sp.id_to_token(1) == "<s>" and sp.token_to_id("<0xE4>") == 3 + 0xE4
    assert sp.token_to_id("no-such-token") is None and sp.id_to_token(10**6) is None


def test_constructor_stop_ids_are_eos_plus_extras(byte_level_backend):
    tok = Tokenizer(byte_level_backend, eos_token="<|eot_id|>", stop_token_ids=[5, 6])
    assert tok.stop_token_ids == {5, 6, byte_level_backend.token_to_id("<|eot_id|>")}


def test_encode_decode_match_transformers(tok_dir):
    ours, hf = Tokenizer.from_hf_dir(tok_dir), load_hf(tok_dir)
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == hf.encode(text), text
        assert ours.encode(text, add_special_tokens=False) == hf.encode(text, add_special_tokens=False), text
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip), text


def test_encode_never_doubles_bos(sp_dir):
    ours, hf = Tokenizer.from_hf_dir(sp_dir), load_hf(sp_dir)
    ids = ours.encode("<s>Hello world")
    assert ids[:2] != [1, 1] and ids[0] == 1
    assert hf.encode("<s>Hello world")[:2] == [1, 1]  # transformers does double it; we deliberately don't
    assert ids == hf.encode("<s>Hello world")[1:]


def test_add_bos_token_follows_post_processor_when_config_is_silent(tmp_path):
    # Llama-3 style: no add_bos_token key, the post-processor adds BOS; transformers adds it, so must we.
    backend = train_byte_level()
    backend.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B:1",
                                      special_tokens=[("<|begin_of_text|>", backend.token_to_id("<|begin_of_text|>"))]),
    ])
    d = write_dir(tmp_path, backend, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                                      "chat_template": LLAMA3_TEMPLATE})
    ours, hf = Tokenizer.from_hf_dir(d), load_hf(d)
    assert ours.add_bos_token and ours.encode("hi 你好") == hf.encode("hi 你好")
    # a rendered template already starts with BOS: encode_chat must not add a second one
    messages = CONVERSATIONS["system"]
    expected = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False,
                                      date_string="26 Jul 2024")
    assert ours.encode_chat(messages, date_string="26 Jul 2024") == expected
    assert expected.count(ours.bos_token_id) == 1


def test_missing_or_broken_files_are_one_line_errors(tmp_path):
    with pytest.raises(AthanorError, match="no tokenizer.json"):
        Tokenizer.from_hf_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(AthanorError) as e:
        Tokenizer.from_hf_dir(tmp_path)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------------ chat templates

# Llama 3.2's public template, plus a role check (the "raise_exception for bad roles" that Llama 2 / Mistral have).
LLAMA3_TEMPLATE = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- for message in messages %}
    {%- if message.role not in ["system", "user", "assistant", "tool", "ipython"] %}
        {{- raise_exception("Unknown role '" + message.role + "': use system, user, assistant or tool") }}
    {%- endif %}
{%- endfor %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

# Qwen2.5-Instruct's public template (tools in the system prompt, <tool_call> / <tool_response> blocks).
QWEN25_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

# Zephyr's public template: no "{%-" whitespace control, so it relies on trim_blocks/lstrip_blocks (indented here
# to exercise lstrip_blocks too).
ZEPHYR_TEMPLATE = """{% for message in messages %}
    {% if message['role'] == 'user' %}
{{ '<|user|>\n' + message['content'] + eos_token }}
    {% elif message['role'] == 'system' %}
{{ '<|system|>\n' + message['content'] + eos_token }}
    {% elif message['role'] == 'assistant' %}
{{ '<|assistant|>\n'  + message['content'] + eos_token }}
    {% endif %}
    {% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
    {% endif %}
{% endfor %}"""

TEMPLATES = {"chatml": CHATML_TEMPLATE, "llama3": LLAMA3_TEMPLATE, "qwen25": QWEN25_TEMPLATE,
             "zephyr": ZEPHYR_TEMPLATE}

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather (天气) for a city <b>&</b> 'quoted'",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "城市 name"}},
                   "required": ["city"]}}}]

CONVERSATIONS = {
    "single": [{"role": "user", "content": "Hello!"}],
    "system": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "2+2? 你好 😀"}],
    "multi": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "  And of Japan?  "},
    ],
    "tool_use": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "sunny, 22°C"},
        {"role": "assistant", "content": "It is sunny and 22°C in Paris."},
    ],
}

TEMPLATE_CASES = [
    (template, conversation, add_generation_prompt, with_tools)
    for template in TEMPLATES
    for conversation in CONVERSATIONS
    for add_generation_prompt in (True, False)
    for with_tools in (False, True)
    # plain ChatML and Zephyr cannot render content-less (tool-call) turns
    if not (template in ("chatml", "zephyr") and conversation == "tool_use")
]


@pytest.fixture(scope="module")
def template_dirs(tmp_path_factory, byte_level_backend) -> dict[str, Path]:
    dirs = {}
    for name, template in TEMPLATES.items():
        bos = "<|begin_of_text|>" if name == "llama3" else None
        eos = "<|eot_id|>" if name == "llama3" else "<|im_end|>"
        config = {"bos_token": bos, "eos_token": eos, "chat_template": template}
        dirs[name] = write_dir(tmp_path_factory.mktemp(name), byte_level_backend, config)
    return dirs


@pytest.fixture(scope="module")
def template_pairs(template_dirs) -> dict[str, tuple[Tokenizer, object]]:
    return {name: (Tokenizer.from_hf_dir(d), load_hf(d)) for name, d in template_dirs.items()}


@pytest.mark.parametrize("template,conversation,add_generation_prompt,with_tools", TEMPLATE_CASES)
def test_chat_template_matches_transformers(template_pairs, template, conversation, add_generation_prompt,
                                            with_tools):
    ours, hf = template_pairs[template]
    messages, tools = CONVERSATIONS[conversation], TOOLS if with_tools else None
    kwargs = {"add_generation_prompt": add_generation_prompt, "tools": tools, "date_string": "26 Jul 2024"}
    expected = hf.apply_chat_template(messages, tokenize=False, **kwargs)
    assert ours.apply_chat_template(messages, **kwargs) == expected
    assert ours.encode_chat(messages, **kwargs) == hf.encode(expected, add_special_tokens=False)


def test_template_renders_tools_like_hf_tojson(template_pairs):
    ours, _ = template_pairs["qwen25"]
    text = ours.apply_chat_template(CONVERSATIONS["single"], tools=TOOLS)
    assert json.dumps(TOOLS[0], ensure_ascii=False) in text  # raw '<', '&', "'", Chinese: no HTML escaping
    llama, _ = template_pairs["llama3"]
    text = llama.apply_chat_template(CONVERSATIONS["single"], tools=TOOLS, date_string="1 Jan 2025")
    assert json.dumps(TOOLS[0], ensure_ascii=False, indent=4) in text  # tojson(indent=4)


def test_strftime_now_gives_todays_date(template_pairs):
    ours, _ = template_pairs["llama3"]
    before = datetime.now().strftime("%d %b %Y")
    text = ours.apply_chat_template(CONVERSATIONS["single"])
    after = datetime.now().strftime("%d %b %Y")
    assert f"Today Date: {before}\n" in text or f"Today Date: {after}\n" in text


def test_raise_exception_surfaces_template_message(template_pairs):
    ours, hf = template_pairs["llama3"]
    bad_role = [{"role": "narrator", "content": "Once upon a time"}]
    message = "Unknown role 'narrator': use system, user, assistant or tool"
    with pytest.raises(AthanorError) as e:
        ours.apply_chat_template(bad_role)
    assert str(e.value) == message
    with pytest.raises(Exception, match=message):  # transformers agrees on the template's message
        hf.apply_chat_template(bad_role, tokenize=False)
    with pytest.raises(AthanorError, match="^Cannot put tools in the first user message"):
        ours.apply_chat_template([{"role": "system", "content": "sys"}], tools=TOOLS)


def test_template_errors_are_one_line_athanor_errors(template_pairs):
    ours, _ = template_pairs["qwen25"]
    with pytest.raises(AthanorError, match="does not parse"):
        ours.apply_chat_template(CONVERSATIONS["single"], chat_template="{% for m in messages %}{{ m }")
    with pytest.raises(AthanorError) as e:  # content a list where the template concatenates strings
        ours.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    assert "\n" not in str(e.value)


def test_no_template_is_an_error_unless_chatml_is_asked_for(sp_dir):
    tok = Tokenizer.from_hf_dir(sp_dir)
    with pytest.raises(AthanorError, match="no chat template"):
        tok.apply_chat_template(CONVERSATIONS["single"])
    text = tok.apply_chat_template(CONVERSATIONS["system"], chat_template="chatml")
    assert text == ("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\n2+2? 你好 😀<|im_end|>\n"
                    "<|im_start|>assistant\n")


def test_extras_reach_the_template_and_override_special_tokens(byte_level_backend):
    tok = Tokenizer(byte_level_backend, eos_token="<|im_end|>", chat_template="{{ eos_token }}|{{ x | tojson }}")
    assert tok.apply_chat_template([], x={"k": "ü"}) == '<|im_end|>|{"k": "ü"}'
    assert tok.apply_chat_template([], x=1, eos_token="E") == "E|1"
    # unset bos and None-valued message keys (OpenAI's content=None) render as nothing, never as "None"
    assert tok.apply_chat_template([], chat_template="[{{ bos_token }}]") == "[]"
    listing = "{% for m in messages %}[{{ m.content }}|{{ 'content' in m }}]{% endfor %}"
    assert tok.apply_chat_template([{"role": "assistant", "content": None}], chat_template=listing) == "[|False]"


def test_template_is_compiled_once(byte_level_backend):
    tok = Tokenizer(byte_level_backend, chat_template="{{ messages | length }} unique-cache-probe")
    tok.apply_chat_template([])
    hits = _compile_template.cache_info().hits
    assert tok.apply_chat_template([{"role": "user", "content": "x"}]) == "1 unique-cache-probe"
    assert _compile_template.cache_info().hits == hits + 1


def test_named_templates_and_template_file(tmp_path, byte_level_backend):
    # tokenizer_config's list form: "default" unless tools are given and a "tool_use" template exists (as HF does)
    named = [{"name": "default", "template": CHATML_TEMPLATE}, {"name": "tool_use", "template": QWEN25_TEMPLATE}]
    d = write_dir(tmp_path / "named", byte_level_backend, {"eos_token": "<|im_end|>", "chat_template": named})
    ours, hf = Tokenizer.from_hf_dir(d), load_hf(d)
    assert ours.chat_template == CHATML_TEMPLATE
    for tools in (None, TOOLS):
        expected = hf.apply_chat_template(CONVERSATIONS["multi"], tools=tools, tokenize=False, add_generation_prompt=True)
        assert ours.apply_chat_template(CONVERSATIONS["multi"], tools=tools) == expected
    # chat_template.jinja (how newer transformers save it) wins over tokenizer_config.json
    d = write_dir(tmp_path / "file", byte_level_backend, {"eos_token": "<|im_end|>", "chat_template": "ignored"})
    (d / "chat_template.jinja").write_text(QWEN25_TEMPLATE, encoding="utf-8")
    assert Tokenizer.from_hf_dir(d).chat_template == QWEN25_TEMPLATE


def test_builtin_smollm2_gguf_template(tmp_path, smollm2_path, byte_level_backend):
    gguf = pytest.importorskip("gguf")
    template = gguf.GGUFReader(str(smollm2_path)).fields["tokenizer.chat_template"].contents()
    d = write_dir(tmp_path, byte_level_backend, {"eos_token": "<|im_end|>", "chat_template": template})
    ours, hf = Tokenizer.from_hf_dir(d), load_hf(d)
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "What is the capital of France?"}]
    text = ours.apply_chat_template(messages)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    assert text == hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # without a system message the template inserts SmolLM's own
    user_only = ours.apply_chat_template(messages[1:], add_generation_prompt=False)
    assert user_only.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert user_only == hf.apply_chat_template(messages[1:], tokenize=False, add_generation_prompt=False)


# -------------------------------------------------------------------------------------- incremental detokenizer


def random_texts(n: int, seed: int = 0) -> list[str]:
    pool = list("abc xyz ") + list("你好世界中文天气") + ["😀", "🚀", "🦀", "👍🏽", "é", "ß", "\n", "  "]
    rng = random.Random(seed)
    return ["".join(rng.choice(pool) for _ in range(rng.randint(1, 30))) for _ in range(n)]


def stream(tok: Tokenizer, ids: list[int], prompt_ids=(), skip_special_tokens=True) -> list[str]:
    detok = IncrementalDetokenizer(tok, prompt_ids, skip_special_tokens=skip_special_tokens)
    pieces = [detok.push(i) for i in ids] + [detok.flush()]
    assert detok.text == "".join(pieces)
    return pieces


def test_incremental_detokenization_matches_full_decode(tok_dir):
    tok = Tokenizer.from_hf_dir(tok_dir)
    for text in TEXTS + random_texts(150):
        for add_special_tokens in (False, True):
            ids = tok.encode(text, add_special_tokens=add_special_tokens)
            for skip in (True, False):
                pieces = stream(tok, ids, skip_special_tokens=skip)
                assert "".join(pieces) == tok.decode(ids, skip_special_tokens=skip), text
                assert not any("\ufffd" in p for p in pieces), (text, pieces)


def test_test_data_really_splits_characters_and_spaces(tok_dir):
    # The check above must be able to fail: some prefixes end mid-character, and decoding tokens one at a time
    # (no left context) loses or garbles text.
    tok = Tokenizer.from_hf_dir(tok_dir)
    all_ids = [tok.encode(t, add_special_tokens=False) for t in TEXTS]
    assert any(tok.decode(ids[:k]).endswith("\ufffd") for ids in all_ids for k in range(len(ids)))
    assert any("".join(tok.decode([i]) for i in ids) != tok.decode(ids) for ids in all_ids)


def test_incremental_detokenization_after_a_prompt(tok_dir):
    tok = Tokenizer.from_hf_dir(tok_dir)
    rng = random.Random(1)
    for prompt_text, answer_text in zip(random_texts(60, seed=2), TEXTS * 5 + random_texts(60, seed=3)):
        prompt = tok.encode(prompt_text)
        answer = tok.encode(answer_text, add_special_tokens=False)
        if rng.random() < 0.5:  # sometimes cut the prompt mid-character (context must start on a boundary)
            prompt = prompt[: rng.randint(0, len(prompt))]
        full, head = tok.decode(prompt + answer), tok.decode(prompt)
        if not full.startswith(head) or head.endswith("\ufffd"):
            continue  # a prompt cut mid-character has no well-defined "new" text
        assert "".join(stream(tok, answer, prompt)) == full[len(head):], (prompt_text, answer_text)


def test_prompt_context_starts_on_a_character_boundary(sp_dir):
    # The prompt ends in byte-fallback tokens and the answer continues with more: byte-fallback decoding garbles a
    # whole run of bytes that starts mid-character, so a context window opening inside "文" or "🦀" would emit U+FFFD.
    tok = Tokenizer.from_hf_dir(sp_dir)
    prompt = tok.encode("x 中文🦀")
    assert tok.id_to_token(prompt[-5]) == "<0x87>"  # the default 5-token context would start mid-character
    answer = [tok.token_to_id(f"<0x{b:02X}>") for b in "ß中".encode()]
    assert "".join(stream(tok, answer, prompt)) == "ß中" == tok.decode(prompt + answer)[len(tok.decode(prompt)):]


def test_special_tokens_in_the_stream(byte_level_dir):
    tok = Tokenizer.from_hf_dir(byte_level_dir)
    ids = tok.encode("Hi 😀<|im_end|><|im_start|>你好", add_special_tokens=False)
    assert "".join(stream(tok, ids)) == "Hi 😀你好"
    assert "".join(stream(tok, ids, skip_special_tokens=False)) == "Hi 😀<|im_end|><|im_start|>你好"


def test_flush_returns_a_dangling_partial_character(byte_level_dir):
    tok = Tokenizer.from_hf_dir(byte_level_dir)
    ids = tok.encode("ok 🦀", add_special_tokens=False)
    cut = next(k for k in range(len(ids)) if tok.decode(ids[:k]).endswith("\ufffd"))
    detok = IncrementalDetokenizer(tok)
    pieces = [detok.push(i) for i in ids[:cut]]
    assert "\ufffd" not in "".join(pieces)
    assert "".join(pieces) + detok.flush() == tok.decode(ids[:cut])


# ------------------------------------------------------------------------------------------------- stop strings


def run_stop(stop: list[str], deltas: list[str]) -> tuple[str, bool]:
    matcher, out = StopMatcher(stop), []
    for delta in deltas:
        text, stopped = matcher.feed(delta)
        out.append(text)
        if stopped:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False


@pytest.mark.parametrize("stop,deltas,expected", [
    (["STOP"], ["hello ST", "OP world"], ("hello ", True)),  # spans 2 deltas
    (["<end>"], ["a <e", "n", "d> b"], ("a ", True)),  # spans 3 deltas
    (["abc"], ["xab", "d"], ("xabd", False)),  # "ab" held, then released: not a stop
    (["abc", "abd"], ["xab", "d tail"], ("x", True)),  # overlapping prefixes: second stop matches
    (["aab"], ["aa", "a", "b"], ("a", True)),  # the match starts inside held-back text
    (["###"], ["###rest"], ("", True)),  # stop at the very start
    (["two", "one"], ["zero one two"], ("zero ", True)),  # several stops: the earliest wins
    (["User:", "\n\n"], ["Answer.\n", "\nUser:"], ("Answer.", True)),
    (["never"], ["some text ne", "v"], ("some text nev", False)),  # no stop: flush returns the held tail
    ([], ["plain"], ("plain", False)),
    (["", "x"], ["abc"], ("abc", False)),  # empty stop strings are ignored
    (["你好"], ["说你", "好吗"], ("说", True)),
])
def test_stop_matcher(stop, deltas, expected):
    assert run_stop(stop, deltas) == expected


def test_stop_matcher_holds_back_only_possible_prefixes():
    matcher = StopMatcher(["abc"])
    assert matcher.feed("xyzab") == ("xyz", False)
    assert matcher.feed("") == ("", False)
    assert matcher.flush() == "ab"
    done = StopMatcher(["x"])
    assert done.feed("axb") == ("a", True)
    assert done.feed("more") == ("", True)  # stays stopped


def test_stop_matcher_on_detokenized_stream(byte_level_dir):
    tok = Tokenizer.from_hf_dir(byte_level_dir)
    ids = tok.encode("The answer is 你好😀 DONE and more", add_special_tokens=False)
    detok, matcher, out = IncrementalDetokenizer(tok), StopMatcher([" DONE"]), ""
    for i in ids:
        text, stopped = matcher.feed(detok.push(i))
        out += text
        if stopped:
            break
    assert stopped and out == "The answer is 你好😀"
