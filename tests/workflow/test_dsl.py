"""The Dify DSL reader and writer: plain and {"data": ...} wrapped files, app-level checks, round trips."""

from __future__ import annotations

import json

import pytest
import yaml

from athanor.workflow.dsl import dump_app, load_app, save_app
from athanor.workflow.errors import WorkflowError
from tests.workflow.conftest import FIXTURES

FIXTURE_FILES = sorted(FIXTURES.glob("*.yml"))


def test_fixtures_exist():
    assert len(FIXTURE_FILES) >= 6


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.name)
def test_every_fixture_parses_and_round_trips(path, tmp_path):
    app = load_app(path)
    assert app.mode in ("workflow", "advanced-chat") and app.nodes and app.edges
    again = load_app(dump_app(app))
    assert again.raw == app.raw == yaml.safe_load(path.read_text())
    assert list(again.nodes) == list(app.nodes)
    assert [(e.source, e.target, e.source_handle) for e in again.edges] == \
        [(e.source, e.target, e.source_handle) for e in app.edges]
    wrapped = save_app(app, tmp_path / "wrapped.json", wrapped=True)
    assert set(json.loads(wrapped.read_text())) == {"data"}
    assert load_app(wrapped).raw == app.raw


def test_app_fields(fixtures_dir):
    app = load_app(fixtures_dir / "hello_branch_chat_w1.yml")
    assert app.name == "hello_branch_w1" and app.mode == "advanced-chat" and app.version == "0.3.1"
    assert app.environment() == {"greeting": "Hi there"}
    assert app.conversation_defaults() == {"turns": []}
    assert app.features == {"opening_statement": ""}
    assert app.nodes["gate"].type == "if-else" and app.nodes["gate"].title == "Gate"
    it = load_app(fixtures_dir / "iteration_format_w1.yml")
    assert {n.id for n in it.children("loop1")} == {"loop1start", "fmt"}
    assert "fmt" not in {n.id for n in it.children(None)}


def test_wrapped_yaml_string_form():
    text = (FIXTURES / "passthrough_w1.yml").read_text()
    assert load_app(json.dumps({"data": text})).name == "passthrough_w1"
    assert load_app(yaml.safe_dump({"data": text})).name == "passthrough_w1"


def test_edits_to_nodes_are_written_back():
    app = load_app(FIXTURES / "passthrough_w1.yml")
    app.nodes["end"].data["title"] = "Finish"
    assert load_app(dump_app(app)).nodes["end"].title == "Finish"


@pytest.mark.parametrize("text, message", [
    ("kind: dataset\napp: {mode: workflow}\n", "only Dify app DSL files"),
    ("kind: app\napp: {mode: chat, name: x}\nmodel_config: {}\n", "model_config.model needs a provider and a name"),
    ("kind: app\napp: {mode: agent-chat, name: x}\n", "agent-chat apps need a model_config section"),
    ("kind: app\napp: {mode: rag-pipeline, name: x}\n", "app mode 'rag-pipeline' is not a Dify app mode"),
    ("kind: app\nworkflow: {graph: {nodes: [], edges: []}}\n", "no 'app' section"),
    ("kind: app\napp: {mode: workflow}\n", "no workflow.graph"),
    ("kind: app\napp: {mode: workflow}\nworkflow: {graph: {nodes: [{id: a}], edges: []}}\n", "needs an id and a data"),
    ("kind: app\napp: {mode: workflow}\nworkflow: {graph: {nodes: [], edges: [{source: a}]}}\n", "needs a source and"),
    ("kind: app\napp: {mode: workflow}\nworkflow: {graph: {nodes: [{id: a, data: {}}, {id: a, data: {}}]}}\n",
     "appears twice"),
    ("key: [unclosed\n", "not valid YAML"),
    ("- just\n- a list\n", "expected a Dify app DSL mapping"),
])
def test_bad_documents_give_one_line_errors(text, message):
    with pytest.raises(WorkflowError, match=message) as e:
        load_app(text + "\n")
    assert "\n" not in str(e.value)


def test_missing_file():
    with pytest.raises(WorkflowError, match="not found"):
        load_app("/no/such/workflow.yml")
