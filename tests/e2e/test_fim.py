"""`suffix` (fill-in-the-middle) on /v1/completions (openai SDK) and /api/generate (ollama client): a tiny model whose
tokenizer has FIM tokens gets the prefix-suffix-middle layout on both APIs (checked against the same layout sent
as token ids); a model without FIM tokens is refused with a one-line 400 on both."""

from __future__ import annotations

import httpx
import ollama
import openai
import pytest

from athanor.models.store import Store
from athanor.serve.app import create_app
from tests.conftest import write_tiny_hf_dir
from tests.e2e.conftest import small_engine_config, start_server

FIM = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")


@pytest.fixture(scope="module")
def fim_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("fim_home")
    model_dir = write_tiny_hf_dir(tmp_path_factory.mktemp("fim_hf") / "tiny-fim", extra_specials=FIM)
    (home / "Modelfile").write_text(f"FROM {model_dir}\nPARAMETER temperature 0\n")
    (home / "Modelfile.plain").write_text(f"FROM {write_tiny_hf_dir(home / 'plain')}\nPARAMETER temperature 0\n")
    store = Store(home)
    store.create("tiny-fim", home / "Modelfile")
    store.create("tiny-plain", home / "Modelfile.plain")
    with start_server(create_app(store=store, engine_config=small_engine_config())) as s:
        yield s


def test_suffix_uses_the_fim_layout_on_both_apis(fim_server):
    oa = openai.OpenAI(base_url=f"{fim_server.url}/v1", api_key="unused", max_retries=0, timeout=60)
    prefix, suffix = "hello world, ", " you?"
    r = oa.completions.create(model="tiny-fim", prompt=prefix, suffix=suffix, max_tokens=6)

    def ids(text):
        return httpx.post(f"{fim_server.url}/tokenize", json={"model": "tiny-fim", "prompt": text,
                                                              "add_special_tokens": False}).json()["tokens"]

    layout = ids(FIM[0]) + ids(prefix) + ids(FIM[1]) + ids(suffix) + ids(FIM[2])
    assert len(ids(FIM[0])) == 1 and r.usage.prompt_tokens == len(layout)
    by_ids = oa.completions.create(model="tiny-fim", prompt=layout, max_tokens=6)
    assert r.choices[0].text == by_ids.choices[0].text
    o = ollama.Client(host=fim_server.url, timeout=60).generate(model="tiny-fim", prompt=prefix, suffix=suffix,
                                                                 options={"num_predict": 6})
    assert o.response == r.choices[0].text and o.prompt_eval_count == len(layout)


def test_models_without_fim_tokens_are_refused_on_both_apis(fim_server):
    oa = openai.OpenAI(base_url=f"{fim_server.url}/v1", api_key="unused", max_retries=0, timeout=60)
    with pytest.raises(openai.BadRequestError) as e:
        oa.completions.create(model="tiny-plain", prompt="a", suffix="b", max_tokens=2)
    assert e.value.body["param"] == "suffix" and "needs a model with FIM tokens" in e.value.body["message"]
    r = httpx.post(f"{fim_server.url}/api/generate", json={"model": "tiny-plain", "prompt": "a", "suffix": "b"})
    assert r.status_code == 400 and "tiny-plain has none" in r.json()["error"]


def test_show_reports_insert_only_for_fim_models(fim_server):
    c = ollama.Client(host=fim_server.url, timeout=60)
    assert "insert" in c.show("tiny-fim").capabilities
    assert "insert" not in c.show("tiny-plain").capabilities
