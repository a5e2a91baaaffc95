"""The official `ollama` Python package against a real athanor server: chat, generate, streams, list, show, ps,
create/copy/delete, keep_alive unload, and errors in Ollama's `{"error": "..."}` shape."""

from __future__ import annotations

import time

import httpx
import ollama
import pytest

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
TIMINGS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")


@pytest.fixture(scope="module")
def client(server):
    return ollama.Client(host=server.url, timeout=60)


def test_chat_answers_paris_with_timings(client):
    r = client.chat(model="smollm2", messages=QUESTION, options={"temperature": 0, "num_predict": 20})
    assert "Paris" in r.message.content and r.message.role == "assistant"
    assert r.done and r.done_reason in ("stop", "length")
    assert r.prompt_eval_count > 5 and 0 < r.eval_count <= 20
    assert all(isinstance(getattr(r, k), int) and getattr(r, k) >= 0 for k in TIMINGS)
    assert r.total_duration >= r.prompt_eval_duration + r.eval_duration > 0


def test_chat_stream_equals_non_stream(client):
    kw = {"model": "smollm2", "messages": QUESTION, "options": {"temperature": 0, "num_predict": 16, "seed": 1}}
    full = client.chat(**kw)
    parts = list(client.chat(**kw, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.message.content for p in parts) == full.message.content
    assert parts[-1].eval_count == full.eval_count and parts[-1].done_reason == full.done_reason


def test_generate_stream_raw_system_and_context(client):
    parts = list(client.generate(model="smollm2", prompt="What is the capital of France?", stream=True,
                                 options={"temperature": 0, "num_predict": 20}))
    assert "Paris" in "".join(p.response for p in parts) and parts[-1].done and parts[-1].context
    raw = client.generate(model="tiny", prompt="hello world", raw=True, options={"num_predict": 3, "stop": ["zzz"]})
    assert raw.prompt_eval_count == len(client_tokens(client, "tiny", "hello world"))
    limited = client.generate(model="tiny", prompt="hi", system="Be brief.",
                              options={"num_predict": 2, "repeat_penalty": 1.1, "repeat_last_n": 8, "top_k": 5,
                                       "top_p": 0.9, "min_p": 0.05, "num_ctx": 256, "num_thread": 1})
    assert limited.eval_count <= 2 and limited.done_reason in ("stop", "length")


def client_tokens(client, model: str, text: str) -> list[int]:
    return httpx.post(f"{client._client.base_url}/tokenize", json={"model": model, "prompt": text}).json()["tokens"]


def test_list_show_ps_version(client, server):
    names = {m.model for m in client.list().models}
    assert {"smollm2:latest", "tiny:latest"} <= names
    show = client.show("smollm2")
    assert show.details.format == "gguf" and show.modelinfo["general.architecture"] == "llama"
    assert "FROM" in show.modelfile and show.template
    client.chat(model="smollm2", messages=QUESTION, options={"num_predict": 1})
    ps = {m.model: m for m in client.ps().models}
    assert "smollm2:latest" in ps and ps["smollm2:latest"].context_length > 0
    assert ps["smollm2:latest"].expires_at is not None
    assert httpx.get(f"{server.url}/api/version").json()["version"]


def test_create_copy_delete(client, tiny_hf_dir):
    client.create(model="terse", from_=str(tiny_hf_dir), system="Answer in one word.",
                  parameters={"temperature": 0, "stop": ["\n"]})
    show = client.show("terse")
    assert "SYSTEM Answer in one word." in show.modelfile
    assert 'stop "\\n"' in show.parameters and "temperature 0" in show.parameters
    client.copy("terse", "terse2")
    assert {"terse:latest", "terse2:latest"} <= {m.model for m in client.list().models}
    assert client.generate(model="terse2", prompt="hi", options={"num_predict": 2}).done
    client.delete("terse2")
    client.delete("terse")
    with pytest.raises(ollama.ResponseError) as e:
        client.show("terse")
    assert e.value.status_code == 404
    # the older request shape: a whole Modelfile as a string
    url = str(client._client.base_url)
    legacy = httpx.post(f"{url}/api/create", json={"model": "legacy", "stream": False,
                                                   "modelfile": f"FROM {tiny_hf_dir}\nSYSTEM Be kind.\n"})
    assert legacy.json() == {"status": "success"} and "SYSTEM Be kind." in client.show("legacy").modelfile
    relative = httpx.post(f"{url}/api/create", json={"model": "rel", "from": "./weights.gguf"})
    assert relative.status_code in (400, 404) and relative.json()["error"]


def test_keep_alive_unloads(client, server):
    client.generate(model="tiny", prompt="hi", options={"num_predict": 1}, keep_alive="1s")
    assert "tiny:latest" in {m.model for m in client.ps().models}
    deadline = time.monotonic() + 10
    while "tiny:latest" in server.manager.models:
        assert time.monotonic() < deadline, "keep_alive 1s did not unload the model"
        time.sleep(0.2)
    assert "tiny:latest" not in {m.model for m in client.ps().models}
    loaded = client.generate(model="tiny", keep_alive=-1)  # no prompt: preload, kept forever
    assert loaded.done_reason == "load" and "tiny:latest" in server.manager.models
    unloaded = client.generate(model="tiny", keep_alive=0)
    assert unloaded.done_reason == "unload" and "tiny:latest" not in server.manager.models


def test_errors_in_ollama_shape(client, server):
    for call in (lambda: client.chat(model="nope", messages=QUESTION),
                 lambda: client.pull("smollm2")):
        with pytest.raises(ollama.ResponseError) as e:
            call()
        assert e.value.status_code in (400, 404) and e.value.error
    bad = httpx.post(f"{server.url}/api/chat", json={"model": "tiny", "messages": QUESTION, "stream": False,
                                                    "options": {"temperature": -1}})
    assert bad.status_code == 400 and isinstance(bad.json()["error"], str)
    long = httpx.post(f"{server.url}/api/generate", json={"model": "tiny", "prompt": "hello " * 2000, "raw": True})
    assert long.status_code == 400 and "context" in long.json()["error"]
    fmt = httpx.post(f"{server.url}/api/chat", json={"model": "tiny", "messages": QUESTION, "format": "yaml"})
    assert fmt.status_code == 400 and 'format must be "json" or a JSON schema' in fmt.json()["error"]
    fmt = httpx.post(f"{server.url}/api/chat", json={"model": "tiny", "messages": QUESTION,
                                                    "format": {"type": "object", "required": 5}})
    assert fmt.status_code == 400 and fmt.json()["error"].startswith("format: invalid JSON schema")


def test_show_tags_ps_fill_details_and_capabilities(client, server, tmp_path):
    """details as Ollama fills them (family, parameter size, quantization) in show, list and ps; capabilities from
    the template; MESSAGEs of the Modelfile come back as `messages`."""
    import httpx  # the load may take a while on a busy machine: a longer timeout than the client's

    httpx.post(f"{server.url}/api/generate", json={"model": "smollm2"}, timeout=300).raise_for_status()  # ps lists it
    show = client.show("smollm2")
    want = ("gguf", "llama", ["llama"], "135M", "Q4_1")
    d = show.details
    assert (d.format, d.family, d.families, d.parameter_size, d.quantization_level) == want
    assert show.capabilities == ["completion"]  # SmolLM2's template renders no tools and no thinking
    assert show.modelinfo["llama.context_length"] == 8192 and show.modelinfo["general.parameter_count"] > 1e8
    listed = {m.model: m.details for m in client.list().models}
    d = listed["smollm2:latest"]
    assert (d.format, d.family, d.families, d.parameter_size, d.quantization_level) == want
    running = {m.model: m.details for m in client.ps().models}
    assert running["smollm2:latest"].quantization_level == "Q4_1"

    qwen3_style = ("{%- if tools %}{{ tools | tojson }}{%- endif %}{%- for m in messages %}<|im_start|>{{ m.role }}\n"
                   "{%- if m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{%- endif %}{{ m.content }}"
                   "<|im_end|>\n{%- endfor %}<|im_start|>assistant\n")
    mf = tmp_path / "Modelfile"
    mf.write_text(f'FROM smollm2\nTEMPLATE """{qwen3_style}"""\nMESSAGE user Hi\nMESSAGE assistant Hello!\n')
    server.manager.store.create("thinker", mf)
    show = client.show("thinker")
    assert show.capabilities == ["completion", "tools", "thinking"]
    raw = httpx.post(f"{server.url}/api/show", json={"model": "thinker"}).json()  # ShowResponse has no messages
    assert raw["messages"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
