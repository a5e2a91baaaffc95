"""Services: model-map files (YAML and JSON, flat or with a default), Dify model names -> specs, model caching,
validation messages, knowledge bases by name."""

from __future__ import annotations

import pytest

from athanor.errors import AthanorError
from athanor.workflow.nodes.base import WorkflowNodeError
from athanor.workflow.services import Services, model_keys, read_model_map

GPT = {"provider": "langgenius/openai/openai", "name": "gpt-4o", "mode": "chat"}


def test_model_keys_try_full_provider_short_provider_then_name():
    assert model_keys(GPT) == ["langgenius/openai/openai/gpt-4o", "openai/gpt-4o", "gpt-4o"]
    assert model_keys({"provider": "deepseek", "name": "deepseek-chat"}) == ["deepseek/deepseek-chat", "deepseek-chat"]
    assert model_keys({"name": ""}) == []


def test_yaml_map_flat(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text("openai/gpt-4o: smollm2\ndeepseek-chat: 'openai:http://127.0.0.1:8000/v1#qwen'\n")
    services = Services.from_options(model_map_file=str(path))
    assert services.default_model is None
    assert services.resolve_model(GPT) == "smollm2"
    assert services.resolve_model({"provider": "deepseek", "name": "deepseek-chat"}) == "openai:http://127.0.0.1:8000/v1#qwen"
    assert services.resolve_model({"provider": "x", "name": "unmapped"}) is None
    assert "unmapped" in services.model_problems({"provider": "x", "name": "unmapped"})[0]
    assert services.model_problems(GPT) == []


def test_json_map_with_default_and_cli_model_wins(tmp_path):
    path = tmp_path / "models.json"
    path.write_text('{"default": "smollm2", "models": {"gpt-4o": "other"}}')
    assert read_model_map(path) == ("smollm2", {"gpt-4o": "other"})
    services = Services.from_options(model_map_file=str(path))
    assert services.resolve_model(GPT) == "other" and services.resolve_model({"name": "x"}) == "smollm2"
    assert Services.from_options(model="cli-model", model_map_file=str(path)).resolve_model({"name": "x"}) == "cli-model"


@pytest.mark.parametrize("text, words", [("a: [1, 2", "does not parse"), ("- a\n- b\n", "expected a mapping"),
                                         ("gpt-4o: 3\n", "bad: gpt-4o")])
def test_bad_map_files_are_one_line_errors(tmp_path, text, words):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(AthanorError, match=words) as e:
        Services.from_options(model_map_file=str(path))
    assert "\n" not in str(e.value)
    with pytest.raises(AthanorError, match="not found"):
        Services.from_options(model_map_file=str(tmp_path / "missing.yaml"))


def test_chat_model_is_loaded_once_per_spec():
    spec = "openai:http://127.0.0.1:9/v1#m"  # the OpenAI client connects lazily: building it needs no server
    services = Services(model_map={"gpt-4o": spec, "gpt-4o-mini": spec})
    first = services.chat_model(GPT)
    assert services.chat_model({"name": "gpt-4o-mini"}) is first
    assert first.name == "m"


def test_unresolvable_and_unloadable_models_are_node_errors():
    with pytest.raises(WorkflowNodeError, match="no default model"):
        Services().chat_model(GPT)
    with pytest.raises(WorkflowNodeError, match="empty"):
        Services(default_model="smollm2").chat_model({"provider": "openai"})
    with pytest.raises(WorkflowNodeError, match="cannot load model 'openai:ftp://x'"):
        Services(default_model="openai:ftp://x").chat_model(GPT)


def test_knowledge_base_by_name_and_missing_one():
    from athanor.rag.kb import KnowledgeBase

    class NoEmbedder:  # opening and listing a base never embeds
        name, dim, max_tokens = "none", 4, 128

    KnowledgeBase.create("docs", embedder_obj=NoEmbedder()).close()
    services = Services()
    kb = services.knowledge_base("docs")
    assert services.knowledge_base("docs") is kb and kb.config.name == "docs"
    services.close()
    with pytest.raises(WorkflowNodeError, match="no knowledge base named 'nope'"):
        services.knowledge_base("nope")
