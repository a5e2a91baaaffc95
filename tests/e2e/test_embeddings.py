"""Embeddings: our hidden states vs transformers on the same weights, then /v1/embeddings through the `openai`
SDK (its default base64 encoding and float), /api/embed and /api/embeddings through the `ollama` package."""

from __future__ import annotations

import httpx
import numpy as np
import ollama
import openai
import pytest
import torch

from athanor.engine.config import EngineConfig
from athanor.runtime.llm import LLM

TEXTS = ["hello world, how are you?", "the cat sat on the mat", "hello"]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_hidden_states_and_embeddings_match_transformers(tiny_hf_dir):
    from transformers import AutoModelForCausalLM

    llm = LLM.load(str(tiny_hf_dir), config=EngineConfig(weight_dtype="float32"))
    hf = AutoModelForCausalLM.from_pretrained(tiny_hf_dir, torch_dtype=torch.float32).eval()
    ours, tokens = llm.embed(TEXTS)
    total = 0
    for text, vec in zip(TEXTS, ours):
        ids = llm.tokenizer.encode(text)
        total += len(ids)
        with torch.no_grad():
            ref = hf(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]  # (N, C) after the norm
        mine = llm.engine.runner.model.hidden_states(torch.tensor(ids))
        assert torch.allclose(mine, ref, atol=1e-4), (mine - ref).abs().max()
        expected = torch.nn.functional.normalize(ref.mean(0), dim=0)
        assert torch.allclose(torch.tensor(vec), expected, atol=1e-5)
    assert tokens == total


def test_embedding_leaves_the_kv_cache_alone(tiny_hf_dir):
    """The forward behind embeddings writes no cache slot: a generation around it is unchanged."""
    from athanor.engine.sampling_params import SamplingParams

    llm = LLM.load(str(tiny_hf_dir))
    sp = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    before = llm.generate_ids([[5, 6, 7, 8]], sp)[0].token_ids
    cache = [layer.self_attn.kv_cache.clone() for layer in llm.engine.runner.model.layers]
    llm.embed(["some text that is long enough to cover several blocks " * 3])
    assert all(torch.equal(c, layer.self_attn.kv_cache) for c, layer in zip(cache, llm.engine.runner.model.layers))
    assert llm.generate_ids([[5, 6, 7, 8]], sp)[0].token_ids == before


def test_openai_sdk_embeddings_base64_and_float(client, server):
    r = client.embeddings.create(model="tiny", input=TEXTS)  # the SDK asks for base64 and decodes it
    vecs = np.array([d.embedding for d in r.data])
    assert [d.index for d in r.data] == [0, 1, 2] and vecs.shape[0] == 3
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    floats = client.embeddings.create(model="tiny", input=TEXTS, encoding_format="float")
    assert np.allclose(vecs, np.array([d.embedding for d in floats.data]), atol=1e-7)
    assert r.usage.prompt_tokens == r.usage.total_tokens > len(TEXTS)
    one = client.embeddings.create(model="tiny", input="hello", encoding_format="float").data[0].embedding
    assert np.allclose(one, vecs[2], atol=1e-6)  # the same text alone or in a batch
    ids = httpx.post(f"{server.url}/tokenize", json={"model": "tiny", "prompt": "hello"}).json()["tokens"]
    by_ids = client.embeddings.create(model="tiny", input=ids, encoding_format="float").data[0].embedding
    assert np.allclose(by_ids, one, atol=1e-6)


def test_openai_embedding_errors(client):
    for bad, param in (({"input": "hello " * 3000}, "input"), ({"input": "x", "dimensions": 0}, "dimensions"),
                       ({"input": "x", "dimensions": 10**6}, "dimensions"),
                       ({"input": [[10**9]]}, "input")):
        with pytest.raises(openai.BadRequestError) as e:
            client.embeddings.create(model="tiny", encoding_format="float", **bad)
        assert "\n" not in e.value.body["message"] and e.value.body["param"] == param
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")


def test_ollama_embed_and_legacy_embeddings(server):
    c = ollama.Client(host=server.url, timeout=60)
    r = c.embed(model="tiny", input=TEXTS)
    vecs = np.array(r.embeddings)
    assert vecs.shape[0] == 3 and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert r.prompt_eval_count > 0 and r.total_duration > 0
    legacy = c.embeddings(model="tiny", prompt=TEXTS[0])
    assert np.allclose(legacy.embedding, vecs[0], atol=1e-6)
    long = httpx.post(f"{server.url}/api/embed", json={"model": "tiny", "input": "hello " * 3000, "truncate": False})
    assert long.status_code == 400 and "context" in long.json()["error"]
    cut = httpx.post(f"{server.url}/api/embed", json={"model": "tiny", "input": "hello " * 3000})
    assert cut.status_code == 200 and len(cut.json()["embeddings"]) == 1  # Ollama's default: truncate
    empty = httpx.post(f"{server.url}/api/embed", json={"model": "tiny", "input": []})
    assert empty.status_code == 400 and isinstance(empty.json()["error"], str)


@pytest.mark.slow
def test_smollm2_embeddings_put_paraphrases_together(server):
    c = ollama.Client(host=server.url, timeout=120)
    a, b, far = np.array(c.embed(model="smollm2", input=[
        "The capital of France is Paris.", "Paris is the capital city of France.",
        "I like to eat green apples."]).embeddings)
    assert a @ b > a @ far + 0.1  # measured 0.96 vs 0.77


def test_dimensions_mean_the_same_on_both_apis(client, server):
    """`dimensions` keeps the first N values, re-normalised, on /v1/embeddings and /api/embed alike."""
    full = np.array(client.embeddings.create(model="tiny", input=TEXTS[0], encoding_format="float").data[0].embedding)
    cut = client.embeddings.create(model="tiny", input=TEXTS[0], dimensions=4, encoding_format="float").data[0].embedding
    assert np.allclose(cut, full[:4] / np.linalg.norm(full[:4]), atol=1e-6)
    ours = ollama.Client(host=server.url, timeout=60).embed(model="tiny", input=TEXTS[0], dimensions=4).embeddings[0]
    assert np.allclose(ours, cut, atol=1e-6)
    bad = httpx.post(f"{server.url}/api/embed", json={"model": "tiny", "input": "x", "dimensions": 0})
    assert bad.status_code == 400 and "dimensions must be between 1 and" in bad.json()["error"]
