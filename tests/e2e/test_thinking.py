"""Reasoning models on a real server: Ollama's `think` (through the `ollama` client) and OpenAI-style
`reasoning_content` (through the `openai` client), on tiny models whose templates think the two common ways:
"qwen3ish" has Qwen3's `enable_thinking` switch (false puts an empty block in the prompt), "r1ish" opens the
block in the prompt as DeepSeek-R1's template does, so its reply is thinking until </think>. The reference for
each split is the raw completion of the same rendered prompt (/api/generate raw)."""

from __future__ import annotations

import json

import httpx
import jinja2
import ollama
import openai
import pytest

from athanor.models.store import Store
from athanor.serve.app import create_app
from tests.conftest import write_tiny_hf_dir
from tests.e2e.conftest import small_engine_config, start_server

TURNS = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m.reasoning_content %}<think>"
         "{{ m.reasoning_content }}</think>{% endif %}{{ m['content'] }}<|im_end|>\n{% endfor %}")
QWEN3ISH = TURNS + ("{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and "
                    "enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}")
R1ISH = TURNS + "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
GO_THINK = ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
            "{{ if .ThinkLevel }}effort: {{ .ThinkLevel }}\n{{ end }}"
            "{{ if and .IsThinkSet (not .Think) }}<think>\n\n</think>\n\n{{ end }}")  # a Modelfile TEMPLATE (Go)
MESSAGES = [{"role": "user", "content": "hello world"}]
OPTIONS = {"num_predict": 12, "temperature": 0}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("think_home")
    store = Store(home)
    for name, template in (("qwen3ish", QWEN3ISH), ("r1ish", R1ISH), ("plain", None)):
        d = write_tiny_hf_dir(home / f"{name}_hf", extra_specials=("<think>", "</think>"))
        if template:
            config = json.loads((d / "tokenizer_config.json").read_text())
            (d / "tokenizer_config.json").write_text(json.dumps(config | {"chat_template": template}))
        (home / f"Modelfile.{name}").write_text(f"FROM {d}\nPARAMETER temperature 0\n")
        store.create(name, home / f"Modelfile.{name}")
    (home / "Modelfile.gothink").write_text(f'FROM {home / "plain_hf"}\nTEMPLATE """{GO_THINK}"""\n')
    store.create("gothink", home / "Modelfile.gothink")
    with start_server(create_app(store=store, engine_config=small_engine_config())) as s:
        yield s


@pytest.fixture(scope="module")
def oc(server):
    return ollama.Client(host=server.url, timeout=120)


def _raw(server, template: str, **variables) -> str:
    """The reference: the completion of the prompt the template renders, without any splitting (the three models
    share one tokenizer and one set of weights: write_tiny_hf_dir with the same seed)."""
    prompt = jinja2.Template(template).render(messages=MESSAGES, add_generation_prompt=True, **variables)
    r = httpx.post(f"{server.url}/api/generate", timeout=120, json={
        "model": "qwen3ish", "prompt": prompt, "raw": True, "stream": False, "options": OPTIONS})
    return r.json()["response"]


def test_r1_style_reply_is_thinking(server, oc):
    raw = _raw(server, R1ISH)
    assert raw.strip()  # the model says something (else the test would prove nothing)
    r = oc.chat(model="r1ish", messages=MESSAGES, options=OPTIONS)  # think unset: on, as Ollama does
    assert r.message.thinking == raw.lstrip() and r.message.content == ""
    parts = list(oc.chat(model="r1ish", messages=MESSAGES, options=OPTIONS, think=True, stream=True))
    assert "".join(p.message.thinking or "" for p in parts) == raw.lstrip()
    assert "".join(p.message.content for p in parts) == ""
    g = oc.generate(model="r1ish", prompt="hello world", options=OPTIONS)
    assert g.thinking == raw.lstrip() and g.response == ""


def test_qwen3_switch_off_renders_the_empty_block(server, oc):
    off = oc.chat(model="qwen3ish", messages=MESSAGES, options=OPTIONS, think=False)
    on = oc.chat(model="qwen3ish", messages=MESSAGES, options=OPTIONS, think=True)
    assert off.message.content == _raw(server, QWEN3ISH, enable_thinking=False) and not off.message.thinking
    assert on.prompt_eval_count < off.prompt_eval_count  # the "<think>\n\n</think>\n\n" of the switch
    ref = _raw(server, QWEN3ISH)
    assert on.message.content + (on.message.thinking or "") != "" and ref  # a reply without a block is content
    if not ref.lstrip().startswith("<think>"):
        assert on.message.content == ref and not on.message.thinking


def test_openai_reasoning_content(server):
    c = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)
    raw = _raw(server, R1ISH)
    r = c.chat.completions.create(model="r1ish", messages=MESSAGES, max_tokens=12)
    message = r.choices[0].message
    assert message.reasoning_content == raw.lstrip() and not message.content
    chunks = list(c.chat.completions.create(model="r1ish", messages=MESSAGES, max_tokens=12, stream=True))
    deltas = [ch.choices[0].delta for ch in chunks if ch.choices]
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == raw.lstrip()
    assert "".join(d.content or "" for d in deltas) == ""
    off = c.chat.completions.create(model="qwen3ish", messages=MESSAGES, max_tokens=12,
                                    extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    on = c.chat.completions.create(model="qwen3ish", messages=MESSAGES, max_tokens=12)
    assert off.usage.prompt_tokens > on.usage.prompt_tokens
    assert off.choices[0].message.content == _raw(server, QWEN3ISH, enable_thinking=False)
    none = c.chat.completions.create(model="qwen3ish", messages=MESSAGES, max_tokens=12, reasoning_effort="none")
    assert none.usage.prompt_tokens == off.usage.prompt_tokens


def test_model_without_thinking_refuses_think(server, oc):
    for think in (True, "high"):
        with pytest.raises(ollama.ResponseError) as e:
            oc.chat(model="plain", messages=MESSAGES, options=OPTIONS, think=think)
        assert e.value.status_code == 400 and e.value.error == '"plain" does not support thinking'
    assert oc.chat(model="plain", messages=MESSAGES, options=OPTIONS, think=False).message.content is not None
    r = httpx.post(f"{server.url}/api/chat", json={"model": "r1ish", "messages": MESSAGES, "think": "extreme"})
    assert r.status_code == 400 and "think must be" in r.json()["error"]
    r = httpx.post(f"{server.url}/api/generate", json={"model": "plain", "prompt": "hi", "think": True})
    assert r.status_code == 400 and r.json()["error"] == '"plain" does not support thinking'


def test_earlier_thinking_goes_back_to_the_template(server, oc):
    history = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"},
               {"role": "user", "content": "how are you"}]
    with_thought = [history[0], history[1] | {"thinking": "the user greets me"}, history[2]]
    plain = oc.chat(model="qwen3ish", messages=history, options=OPTIONS)
    thought = oc.chat(model="qwen3ish", messages=with_thought, options=OPTIONS)
    assert thought.prompt_eval_count > plain.prompt_eval_count
    c = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)
    oa = c.chat.completions.create(model="qwen3ish", max_tokens=1, messages=[
        history[0], history[1] | {"reasoning_content": "the user greets me"}, history[2]])
    assert oa.usage.prompt_tokens == thought.prompt_eval_count


def test_responses_api_reasoning_item(server):
    c = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)
    raw = _raw(server, R1ISH)
    r = c.responses.create(model="r1ish", input="hello world", max_output_tokens=12)
    assert [o.type for o in r.output] == ["reasoning", "message"]
    assert r.output[0].content[0].text == raw.lstrip() and r.output_text == ""
    assert r.usage.output_tokens_details.reasoning_tokens == r.usage.output_tokens == 12  # never left the block
    events = list(c.responses.create(model="r1ish", input="hello world", max_output_tokens=12, stream=True))
    assert "".join(e.delta for e in events if e.type == "response.reasoning_text.delta") == raw.lstrip()
    final = events[-1].response
    assert [o.type for o in final.output] == ["reasoning", "message"]
    assert final.output[0].content[0].text == raw.lstrip()
    assert [e.output_index for e in events if e.type == "response.output_item.added"] == [0, 1]
    off = c.responses.create(model="qwen3ish", input="hello world", max_output_tokens=12, reasoning={"effort": "none"})
    on = c.responses.create(model="qwen3ish", input="hello world", max_output_tokens=12)
    assert off.usage.input_tokens > on.usage.input_tokens  # the empty block of enable_thinking=False


def test_reasoning_with_tools_offered_streams_like_the_full_answer(server):
    """The thinking is split off before tool calls are searched for, streamed or not."""
    c = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object",
                                                                                   "properties": {}}}}]
    full = c.chat.completions.create(model="r1ish", messages=MESSAGES, max_tokens=12, tools=tools).choices[0]
    assert full.message.reasoning_content and not full.message.content and not full.message.tool_calls
    chunks = list(c.chat.completions.create(model="r1ish", messages=MESSAGES, max_tokens=12, tools=tools,
                                            stream=True))
    deltas = [ch.choices[0].delta for ch in chunks if ch.choices]
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == full.message.reasoning_content
    assert "".join(d.content or "" for d in deltas) == ""


def test_go_template_sees_think_as_ollama_passes_it(oc):
    """Ollama's .Think / .IsThinkSet / .ThinkLevel reach a Modelfile's Go TEMPLATE."""
    counts = {str(t): oc.chat(model="gothink", messages=MESSAGES, options=OPTIONS, think=t).prompt_eval_count
              for t in (True, False, "high")}
    assert counts["False"] > counts["True"]  # the empty block: IsThinkSet and not Think
    assert counts["high"] > counts["True"]  # "effort: high"
    assert oc.show("gothink").capabilities == ["completion", "thinking"]
