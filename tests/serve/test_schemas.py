"""OpenAI request models and the error shapes: option mapping, unsupported features refused, 400/404 bodies."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from athanor.models.store import Store
from athanor.serve.app import create_app, resolve_api_key
from athanor.serve.errors import ServeError
from athanor.serve.openai_schemas import ChatCompletionRequest, CompletionRequest

MSG = [{"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]}]


def test_chat_options_map_to_sampling_names():
    r = ChatCompletionRequest(model="m", messages=MSG, max_completion_tokens=7, logprobs=True, top_logprobs=2,
                              stop="x", top_k=5, seed=3)
    options = r.sampling_options()
    assert options["max_tokens"] == 7 and options["logprobs"] == 2 and options["stop"] == ["x"]
    assert options["top_k"] == 5 and options["seed"] == 3 and options["temperature"] is None
    assert r.messages[0].as_template_message() == {"role": "user", "content": "hi there"}
    assert ChatCompletionRequest(model="m", messages=MSG, logprobs=True).sampling_options()["logprobs"] == 0
    assert ChatCompletionRequest(model="m", messages=MSG).sampling_options()["logprobs"] is None


@pytest.mark.parametrize("extra", [{"tools": [{"type": "function"}]}, {"tool_choice": "required"},
                                   {"response_format": {"type": "xml"}}, {"top_logprobs": 2},
                                   {"response_format": {"type": "json_schema", "json_schema": "not an object"}},
                                   {"max_tokens": 1, "max_completion_tokens": 2}])
def test_unsupported_or_conflicting_chat_fields_refused(extra):
    with pytest.raises(ServeError):
        ChatCompletionRequest(model="m", messages=MSG, **extra).check_supported()


def test_response_format_as_a_constraint():
    def schema(fmt):
        return ChatCompletionRequest(model="m", messages=MSG, response_format=fmt).json_schema()

    assert schema(None) is None and schema({"type": "text"}) is None
    assert schema({"type": "json_object"}) is True
    s = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert schema({"type": "json_schema", "json_schema": {"name": "x", "schema": s}}) == s


def test_completion_prompt_forms():
    class Tok:
        def encode(self, text):
            return [len(text)]

    assert CompletionRequest(model="m", prompt="abc").prompts(Tok()) == [[3]]
    assert CompletionRequest(model="m", prompt=["a", "bb"]).prompts(Tok()) == [[1], [2]]
    assert CompletionRequest(model="m", prompt=[5, 6]).prompts(Tok()) == [[5, 6]]
    assert CompletionRequest(model="m", prompt=[[5], [6, 7]]).prompts(Tok()) == [[5], [6, 7]]
    with pytest.raises(ServeError):
        CompletionRequest(model="m", prompt="x", best_of=3).check_supported()  # best_of other than n


def test_error_shapes_per_api(tmp_path, monkeypatch):
    client = TestClient(create_app(store=Store(tmp_path)))
    r = client.post("/v1/completions", json={"model": "m", "prompt": "x", "max_tokens": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = client.post("/api/generate", json={"model": "nope", "prompt": "x"})
    assert r.status_code == 404 and isinstance(r.json()["error"], str)
    r = client.post("/api/chat", json={"messages": []})
    assert r.status_code == 400 and "model" in r.json()["error"]
    assert client.post("/v1/embeddings", json={"model": "m", "input": []}).status_code == 400
    assert client.get("/v1/models/nope").status_code == 404
    monkeypatch.setenv("ATHANOR_API_KEY", "k")
    assert resolve_api_key(None) == "k" and resolve_api_key("given") == "given"
    monkeypatch.delenv("ATHANOR_API_KEY")
    assert resolve_api_key(None) is None
