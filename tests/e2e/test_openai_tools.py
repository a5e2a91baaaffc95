"""OpenAI `tools` / `tool_choice` through the official `openai` SDK against a real athanor server, with a model that
really calls a tool: the tiny Qwen2 fine-tuned here by athanor's own trainer (LoRA, ~7 s) to answer the weather
question with a Hermes `<tool_call>` block when the tool is offered, and with plain text when it is not."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
import yaml

from athanor.models.store import Store
from athanor.serve.app import create_app
from athanor.serve.tool_calls import ToolCallStream
from tests.e2e.conftest import small_engine_config, start_server

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
CALL = {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
NO_TOOLS_ANSWER = "hello world, how are you?"  # words of the tiny tokenizer's corpus: a few tokens
MODEL = "tiny-tools"


@pytest.fixture(scope="module")
def tool_model_home(tmp_path_factory, tiny_hf_dir):
    """A store holding the tiny model + a LoRA adapter trained to call get_weather (and to answer plainly when no
    tool is offered, so tool_choice="none" is seen to leave the tools out of the prompt)."""
    from athanor.train.config import load_config
    from athanor.train.sft import run_sft

    work = tmp_path_factory.mktemp("tool_sft")
    rows = [{"messages": QUESTION + [{"role": "assistant", "content": "", "tool_calls": [CALL]}], "tools": TOOLS},
            {"messages": QUESTION + [{"role": "assistant", "content": NO_TOOLS_ANSWER}]}]
    (work / "tools.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (work / "dataset_info.json").write_text(json.dumps({"tool_chat": {"file_name": "tools.jsonl",
                                                                      "formatting": "openai"}}))
    (work / "sft.yaml").write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_hf_dir), "stage": "sft", "finetuning_type": "lora", "lora_rank": 8,
        # lm_head too (see tests/train/test_sft.py); cutoff above the ~300-token sample (tools listed in the prompt)
        "lora_target": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head", "dataset": "tool_chat",
        "cutoff_len": 400, "output_dir": str(work / "out"), "per_device_train_batch_size": 2,
        "learning_rate": 5e-3, "max_steps": 150, "logging_steps": 50, "save_steps": 1000,
        "lr_scheduler_type": "constant", "seed": 0}))
    result = run_sft(load_config(work / "sft.yaml", has_cuda=False), echo=lambda _: None)
    home = work / "home"
    (work / "Modelfile").write_text(f"FROM {tiny_hf_dir}\nADAPTER {result.output_dir}\nPARAMETER temperature 0\n")
    Store(home).create(MODEL, work / "Modelfile")
    return home


@pytest.fixture(scope="module")
def tool_server(tool_model_home):
    app = create_app(store=Store(tool_model_home), engine_config=small_engine_config())
    with start_server(app) as s:
        yield s


@pytest.fixture(scope="module")
def client(tool_server):
    return openai.OpenAI(base_url=f"{tool_server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_non_streamed_reply_is_a_tool_call(client):
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, tools=TOOLS, max_tokens=80)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None  # the call was the whole reply; no markup leaks into content
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}


def test_streamed_call_is_assembled_by_the_sdk(client):
    with client.chat.completions.stream(model=MODEL, messages=QUESTION, tools=TOOLS, max_tokens=80) as stream:
        content = "".join(e.delta for e in stream if e.type == "content.delta")
        final = stream.get_final_completion()
    assert content == ""  # the raw <tool_call> text was never streamed as content
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_streamed_deltas_in_openai_shape(client):
    chunks = list(client.chat.completions.create(model=MODEL, messages=QUESTION, tools=TOOLS, max_tokens=80,
                                                 stream=True))
    deltas = [c.choices[0].delta for c in chunks]
    calls = [tc for d in deltas for tc in (d.tool_calls or [])]
    assert calls[0].index == 0 and calls[0].id and calls[0].function.name == "get_weather"
    assert "".join(c.function.arguments or "" for c in calls) == '{"city": "Paris"}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["tool_calls"]


def test_tool_choice_none_leaves_tools_out_and_parses_nothing(client):
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, tools=TOOLS, tool_choice="none",
                                       max_tokens=40)
    choice = r.choices[0]
    assert choice.message.tool_calls is None and choice.finish_reason == "stop"
    assert choice.message.content == NO_TOOLS_ANSWER  # the answer trained for a prompt without tools


def test_a_reply_that_is_not_a_call_streams_as_the_same_text(client):
    kw = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "tools": TOOLS, "max_tokens": 12,
          "extra_body": {"ignore_eos": True}}
    full = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    if full.choices[0].message.tool_calls:
        pytest.skip("the random tiny model happened to call a tool")
    assert text == full.choices[0].message.content and full.choices[0].finish_reason == "length"


def test_follow_up_turn_with_the_tool_result(client, tool_server):
    first = client.chat.completions.create(model=MODEL, messages=QUESTION, tools=TOOLS, max_tokens=80)
    call = first.choices[0].message.tool_calls[0]
    history = QUESTION + [first.choices[0].message.model_dump(exclude_none=True),
                          {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 21}'}]
    r = client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS, max_tokens=8)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    # the call and its result reached the template: render the same messages and read them back
    ids = httpx.post(f"{tool_server.url}/tokenize", json={"model": MODEL, "messages": history, "tools": TOOLS}).json()
    prompt = httpx.post(f"{tool_server.url}/detokenize", json={"model": MODEL, "tokens": ids["tokens"]}).json()
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt["prompt"]
    assert '{"temperature_c": 21}' in prompt["prompt"] and '"name": "get_weather"' in prompt["prompt"]
    assert ids["count"] == r.usage.prompt_tokens


@pytest.mark.parametrize("choice, words", [
    ({"type": "function", "function": {"name": "no_such_tool"}}, "'no_such_tool', which is not in tools"),
    ({"type": "function", "function": "get_weather"}, "tool_choice object must be"),
    ("sometimes", "tool_choice must be"),
])
def test_bad_tool_choices_are_400(client, choice, words):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=QUESTION, tools=TOOLS, tool_choice=choice)
    assert words in e.value.body["message"] and e.value.body["param"] == "tool_choice"


@pytest.mark.parametrize("tools, param", [
    ([{"type": "function"}], "tools[0]"),
    ([{"type": "retrieval", "function": {"name": "f"}}], "tools[0]"),
    ([{"type": "function", "function": {"name": "has space"}}], "tools[0].function.name"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}],
     "tools[0].function.parameters"),
    ([TOOLS[0], {"type": "function", "function": {"name": "f", "parameters": []}}], "tools[1].function.parameters"),
    ([TOOLS[0], TOOLS[0]], "tools"),
    ("get_weather", "tools"),
])
def test_malformed_tools_are_400_in_openai_shape(client, tools, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=QUESTION, tools=tools)
    assert e.value.body["type"] == "invalid_request_error" and e.value.body["param"] == param


@pytest.mark.parametrize("pieces, sent, content, num_calls", [
    (["Let me check. <to", "ol_call>\n", '{"name": "get_weather", "arguments": {"city": "Paris"}}', "</tool_call>"],
     "Let me check. ", "", 1),
    (['  {"name": "get_weather", ', '"parameters": {"city": "Paris"}}'], "", "", 1),  # Llama-3 style
    (["a <to", "ol tip"], "a <tool tip", "", 0),  # looked like a marker, was not
    (['{"x": ', "1}"], "", '{"x": 1}', 0),  # JSON that is no call comes out at the end
    (["<tool_call>", '{"name": "rm_rf"}</tool_call>'], "", '<tool_call>{"name": "rm_rf"}</tool_call>', 0),
])
def test_held_back_text_and_parsed_calls(pieces, sent, content, num_calls):
    parser = ToolCallStream({"get_weather"})
    assert "".join(parser.feed(p) for p in pieces) == sent
    reply = parser.finish()
    assert (reply.content, len(reply.tool_calls)) == (content, num_calls)
    if num_calls:
        assert json.loads(reply.tool_calls[0]["function"]["arguments"]) == {"city": "Paris"}


# --- the same model through the official `ollama` client (/api/chat with tools) ----------------------------


def test_ollama_chat_returns_tool_calls_with_object_arguments(tool_server):
    """Raw /api/chat (the `ollama` client reorders the schema's keys, which changes the prompt this tiny model was
    overfitted to); every reply is read back with the `ollama` package's own response type."""
    import ollama

    body = {"model": MODEL, "messages": QUESTION, "tools": TOOLS, "options": {"num_predict": 80}}
    r = ollama.ChatResponse.model_validate(httpx.post(f"{tool_server.url}/api/chat", json=body | {"stream": False},
                                                      timeout=60).json())
    assert r.message.content == "" and r.done_reason == "stop"
    (call,) = r.message.tool_calls
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris"}
    with httpx.stream("POST", f"{tool_server.url}/api/chat", json=body, timeout=60) as resp:
        parts = [ollama.ChatResponse.model_validate_json(line) for line in resp.iter_lines() if line]
    assert "".join(p.message.content for p in parts) == ""  # the <tool_call> markup never reaches content
    streamed = [tc for p in parts for tc in (p.message.tool_calls or [])]
    assert [(t.function.name, t.function.arguments) for t in streamed] == [("get_weather", {"city": "Paris"})]
    assert parts[-1].done and parts[-1].done_reason == "stop"


def test_ollama_follow_up_turn_reaches_the_template(tool_server):
    """Ollama's history shapes (calls with object arguments, a tool turn with tool_name) render like OpenAI's."""
    history = QUESTION + [{"role": "assistant", "content": "",
                           "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                          {"role": "tool", "content": '{"temperature_c": 21}', "tool_name": "get_weather"}]
    r = httpx.post(f"{tool_server.url}/api/chat", json={"model": MODEL, "messages": history, "tools": TOOLS,
                                                         "stream": False, "options": {"num_predict": 4}})
    assert r.status_code == 200 and r.json()["done"] is True
    assert r.json()["prompt_eval_count"] > 0
    bad = httpx.post(f"{tool_server.url}/api/chat", json={"model": MODEL, "stream": False, "messages": [
        {"role": "assistant", "content": "", "tool_calls": [{"function": "get_weather"}]}]})
    assert bad.status_code == 400 and "tool_calls" in bad.json()["error"]


# --- max_tokens cutting a call: finish_reason "length", no markup in content -------------------------------------


CALL_TEXT = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


@pytest.mark.parametrize("text, content, num_calls", [
    ("Sure. " + CALL_TEXT[:30], "Sure.", 0),  # cut inside the first call
    (CALL_TEXT + "\n" + CALL_TEXT[:25], "", 1),  # cut inside the second of two parallel calls
    ("Sure. <tool_", "Sure.", 0),  # cut inside the marker itself
    ("just text", "just text", 0),
])
def test_truncated_reply_drops_the_open_call(text, content, num_calls):
    parser = ToolCallStream({"get_weather"})
    sent = parser.feed(text)
    reply = parser.finish(truncated=True)
    assert "<tool" not in sent + reply.content and (sent + reply.content).strip() == content
    assert len(reply.tool_calls) == num_calls


def test_max_tokens_inside_a_call_is_length_without_markup(client, tool_server):
    full = client.chat.completions.create(model=MODEL, messages=QUESTION, tools=TOOLS, max_tokens=80)
    assert full.choices[0].finish_reason == "tool_calls"
    cut = full.usage.completion_tokens - 4  # inside the JSON of the call
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, tools=TOOLS, max_tokens=cut)
    assert r.choices[0].finish_reason == "length" and not r.choices[0].message.tool_calls
    assert "<tool" not in (r.choices[0].message.content or "")
    chunks = list(client.chat.completions.create(model=MODEL, messages=QUESTION, tools=TOOLS, max_tokens=cut,
                                                 stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "<tool" not in streamed and chunks[-1].choices[0].finish_reason == "length"
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
    body = {"model": MODEL, "messages": QUESTION, "tools": TOOLS, "stream": False, "options": {"num_predict": cut}}
    o = httpx.post(f"{tool_server.url}/api/chat", json=body, timeout=60).json()
    assert o["done_reason"] == "length" and "<tool" not in o["message"]["content"]


def test_anthropic_messages_tool_use_round_trip(tool_server):
    """The same trained model through Anthropic's SDK: the call comes back as a tool_use block (streamed too), and
    a tool_result turn reaches the template like an OpenAI tool turn."""
    import anthropic

    client = anthropic.Anthropic(base_url=tool_server.url, api_key="unused", max_retries=0, timeout=60)
    tools = [{"name": "get_weather", "description": "Current weather of a city",
              "input_schema": TOOLS[0]["function"]["parameters"]}]
    msg = client.messages.create(model=MODEL, max_tokens=80, messages=QUESTION, tools=tools)
    assert msg.stop_reason == "tool_use"
    (use,) = [b for b in msg.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.input == {"city": "Paris"}
    assert not any(b.type == "text" and "<tool" in b.text for b in msg.content)
    with client.messages.stream(model=MODEL, max_tokens=80, messages=QUESTION, tools=tools) as stream:
        final = stream.get_final_message()
    assert [(b.type, getattr(b, "input", None)) for b in final.content] == [("tool_use", {"city": "Paris"})]
    follow = client.messages.create(model=MODEL, max_tokens=4, tools=tools, messages=QUESTION + [
        {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": '{"temperature_c": 21}'}]}])
    assert follow.usage.input_tokens > msg.usage.input_tokens
