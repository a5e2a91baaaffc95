"""Dify's keyless built-in tools (workflow/dify_tools.py), bindings files, and the CLI around Dify exports:
`validate` prints warnings and passes, `--bindings` / `--bind-tool` / `--bind-kb`, `import` and `keys`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from athanor.agent.tools import ToolError
from athanor.workflow import dify_tools

FIXTURES = Path(__file__).parent / "fixtures" / "dify"
DOC = json.dumps({"store": {"books": [{"title": "Dune", "price": 9}, {"title": "Emma", "price": 7}]}, "open": True})


def test_json_parse_picks_with_jsonpath():
    parse = dify_tools.json_parse
    assert parse.call({"content": DOC, "json_filter": "$.store.books[1].title"}) == "Emma"
    assert json.loads(parse.call({"content": DOC, "json_filter": "$.store.books[*].price"})) == [9, 7]
    assert parse.call({"content": DOC, "json_filter": "open"}) == "true"
    assert parse.call({"content": DOC, "json_filter": "$.nothing"}) == ""
    with pytest.raises(ToolError, match="filters and recursive descent"):
        parse.call({"content": DOC, "json_filter": "$..price"})
    with pytest.raises(ToolError, match="content is not JSON"):
        parse.call({"content": "{nope", "json_filter": "$"})


def test_json_insert_delete_replace():
    doc = json.loads(dify_tools.json_insert.call({"content": DOC, "query": "$.store.books",
                                                  "new_value": '{"title": "Ulysses", "price": 12}', "index": 0}))
    assert [b["title"] for b in doc["store"]["books"]] == ["Ulysses", "Dune", "Emma"]
    doc = json.loads(dify_tools.json_insert.call({"content": DOC, "query": "$.store.city", "new_value": "Oslo",
                                                  "create_path": True}))
    assert doc["store"]["city"] == "Oslo"
    doc = json.loads(dify_tools.json_delete.call({"content": DOC, "query": "$.store.books[*].price"}))
    assert doc["store"]["books"] == [{"title": "Dune"}, {"title": "Emma"}]
    doc = json.loads(dify_tools.json_replace.call({"content": DOC, "query": "$.store.books[0].price",
                                                   "replace_value": "10"}))
    assert doc["store"]["books"][0]["price"] == 10
    doc = json.loads(dify_tools.json_replace.call({"content": DOC, "query": "$.open", "replace_value": "is_open",
                                                   "replace_model": "key"}))
    assert doc["is_open"] is True and "open" not in doc
    with pytest.raises(ToolError, match="matches nothing"):
        dify_tools.json_replace.call({"content": DOC, "query": "$.none", "replace_value": 1})


def test_eval_expression_is_the_ast_calculator():
    assert dify_tools.eval_expression.call({"expression": "(2+3)*4"}) == "20"
    with pytest.raises(ToolError):
        dify_tools.eval_expression.call({"expression": "__import__('os')"})


def test_page_text_drops_scripts_and_styles():
    html = "<html><script>alert(1)</script><style>b{}</style><body><p>One</p> <p>Two</p></body></html>"
    assert dify_tools.page_text(html) == "One\nTwo"


def test_bindings_file_and_pairs(tmp_path):
    from athanor.errors import AthanorError
    from athanor.workflow.bindings import parse_pairs, read_bindings

    path = tmp_path / "bindings.yml"
    path.write_text("tools:\n  tavily/tavily_search: webscraper\nknowledge:\n  abc-123: handbook\n")
    assert read_bindings(path) == ({"tavily/tavily_search": "webscraper"}, {"abc-123": "handbook"})
    path.write_text("tool:\n  x: y\n")
    with pytest.raises(AthanorError, match="expected a mapping with 'tools' and/or 'knowledge'"):
        read_bindings(path)
    assert parse_pairs(["a/b=c"], "--bind-tool") == {"a/b": "c"}
    with pytest.raises(AthanorError, match="--bind-kb 'x' is not KEY=VALUE"):
        parse_pairs(["x"], "--bind-kb")


def _cli(*args: str):
    from athanor.workflow.cli import workflow_app

    return CliRunner().invoke(workflow_app, list(args))


def test_validate_prints_warnings_and_passes_and_bindings_clear_them(tmp_path):
    file = str(FIXTURES / "workflow_search_digest.yml")
    result = _cli("validate", file)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len([line for line in lines if line.startswith("warning: ")]) == 3
    assert lines[-1] == "ok: Search Digest (workflow, 6 nodes, 7 edges, 3 warning(s))"
    bound = _cli("validate", file, "--bind-tool", "ddgo_search=webscraper", "--bind-tool",
                 "langgenius/searxng/searxng/searxng_search=webscraper", "--bind-tool", "arxiv/arxiv_search=http_get")
    assert bound.exit_code == 0 and bound.stdout.strip() == "ok: Search Digest (workflow, 6 nodes, 7 edges)"
    bindings = tmp_path / "b.yml"
    bindings.write_text("knowledge:\n  0d4e3f2a-9b8c-4d7e-a6f5-1e2d3c4b5a69: nope\n")
    kb = _cli("validate", str(FIXTURES / "chatflow_policy_kb.yml"), "--bindings", str(bindings))
    assert kb.exit_code == 0 and "(bound to 'nope') is not a knowledge base here" in kb.stdout
    refused = _cli("validate", str(FIXTURES / "chatflow_tod_agent.yml"))
    assert refused.exit_code == 1 and "Dify plugin 'lysander/tod_agent/tod_agent'" in refused.stdout


def test_run_refuses_the_plugin_strategy_in_one_line():
    result = _cli("run", str(FIXTURES / "chatflow_tod_agent.yml"), "-q", "hi", "--model", "smollm2")
    assert result.exit_code == 1 and "comes from the Dify plugin" in result.stderr


def test_import_prints_a_key_and_keys_lists_it(tmp_path):
    first = _cli("import", str(FIXTURES / "chat_persona.yml"), "--name", "persona")
    assert first.exit_code == 0, first.output
    key = first.stdout.strip()
    assert key.startswith("app-") and len(key) > 20
    again = _cli("import", str(FIXTURES / "chat_persona.yml"), "--name", "persona")
    assert again.stdout.strip() == key  # the same file again keeps its key
    clash = _cli("import", str(FIXTURES / "completion_translate.yml"), "--name", "persona")
    assert clash.exit_code != 0 and "already installed" in str(clash.exception or clash.output)
    bad = _cli("import", str(FIXTURES / "chat_persona.yml"), "--name", "../evil")
    assert bad.exit_code != 0
    listed = _cli("keys")
    assert listed.stdout.split() == ["persona", key]
