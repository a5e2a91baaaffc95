"""A promoted alias is a serving name: the `openai` and `ollama` clients list it next to the models, retrieve it
under its own name, and it disappears from the lists when it is removed. An alias to a deleted model is not
offered."""

from __future__ import annotations

import ollama
import openai

from athanor.serve.app import create_app
from tests.e2e.conftest import make_store, small_engine_config, start_server


def test_aliases_are_listed_by_openai_and_ollama_clients(tmp_path, tiny_hf_dir):
    store = make_store(tmp_path, tiny_hf_dir)
    store.set_alias("prod", "tiny")
    with start_server(create_app(store=store, engine_config=small_engine_config())) as s:
        oa = openai.OpenAI(base_url=f"{s.url}/v1", api_key="unused", max_retries=0)
        ol = ollama.Client(host=s.url)

        ids = [m.id for m in oa.models.list().data]
        assert "tiny" in ids and "prod" in ids and "smollm2" in ids
        assert oa.models.retrieve("prod").id == "prod"
        tags = {m.model: m for m in ol.list().models}
        assert {"tiny:latest", "prod:latest"} <= set(tags)
        assert tags["prod:latest"].details.family == tags["tiny:latest"].details.family
        reply = oa.chat.completions.create(model="prod", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert reply.model == "prod"

        store.remove("prod")
        assert "prod" not in [m.id for m in oa.models.list().data]
        store.set_alias("gone", "tiny")
        store.remove("tiny")  # the alias' target is gone: the alias is not offered
        assert "gone" not in [m.id for m in oa.models.list().data]
        assert "gone:latest" not in {m.model for m in ol.list().models}
