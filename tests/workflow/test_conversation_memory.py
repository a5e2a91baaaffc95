"""Conversation memory for advanced-chat apps: each turn's query and answer are saved with the conversation
(SQLite) and come back as the llm node's `memory` on the next turn, through the engine, the CLI and HTTP,
also after a restart (new engine, store and services objects over the same database file)."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from athanor.workflow.dsl import load_app
from athanor.workflow.engine import WorkflowEngine
from athanor.workflow.runs import RunStore
from athanor.workflow.services import Services
from tests.workflow.w2_helpers import SCRIPTED, ScriptedChatModel

APP = Path(__file__).parent / "fixtures" / "w3" / "memory_chat_w3.yml"
FIXTURES_W1 = Path(__file__).parent / "fixtures" / "w1"
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def _turn(store: RunStore, model, query: str, conversation_id: str | None = None):
    """One chat turn as the CLI and the routes do it: load the conversation, run, save the turn."""
    services = Services(default_model=SCRIPTED)
    services.register_model(SCRIPTED, model)
    app = load_app(APP)
    saved = (store.conversation(conversation_id) if conversation_id else None) or {}
    count, history = saved.get("dialogue_count", 0) + 1, saved.get("history") or []
    result = WorkflowEngine(app, services, [store.observer(app)]).run(
        {}, query=query, conversation_id=conversation_id, dialogue_count=count,
        conversation=saved.get("variables"), history=history)
    assert result.status == "succeeded", result.error
    store.save_turn(app.name, result, query, count, history)
    return result


def _user(text):
    return {"role": "user", "content": text}


def _bot(text):
    return {"role": "assistant", "content": text}


def test_second_turn_sees_the_first_and_a_restart_continues_with_a_window(tmp_path):
    db = tmp_path / "runs.sqlite"
    model = ScriptedChatModel(["Hi Ada.", "Your name is Ada."])
    store = RunStore(db)
    first = _turn(store, model, "My name is Ada.")
    second = _turn(store, model, "What is my name?", first.conversation_id)
    assert second.conversation_id == first.conversation_id and second.answer == "Your name is Ada."
    assert model.calls[0]["messages"] == [SYSTEM, _user("My name is Ada.")]
    assert model.calls[1]["messages"] == [SYSTEM, _user("My name is Ada."), _bot("Hi Ada."), _user("What is my name?")]
    store.close()

    restarted, model2 = RunStore(db), ScriptedChatModel(["Blue.", "Ada, blue."])  # new objects, same file
    _turn(restarted, model2, "Favourite colour: blue.", first.conversation_id)
    _turn(restarted, model2, "Summarize.", first.conversation_id)
    third, fourth = (c["messages"] for c in model2.calls)
    assert third == [SYSTEM, _user("My name is Ada."), _bot("Hi Ada."), _user("What is my name?"),
                     _bot("Your name is Ada."), _user("Favourite colour: blue.")]
    # window.size = 2: the fourth prompt keeps only the last two turns
    assert fourth == [SYSTEM, _user("What is my name?"), _bot("Your name is Ada."),
                      _user("Favourite colour: blue."), _bot("Blue."), _user("Summarize.")]
    saved = restarted.conversation(first.conversation_id)
    assert saved["dialogue_count"] == 4 and len(saved["history"]) == 8 and saved["history"][-1] == _bot("Ada, blue.")


def test_an_old_database_gets_the_history_column(tmp_path):
    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as con:  # the conversations table as the first release wrote it
        con.execute("CREATE TABLE conversations (id TEXT PRIMARY KEY, app_name TEXT, variables TEXT, "
                    "dialogue_count INTEGER, updated_at REAL)")
        con.execute("INSERT INTO conversations VALUES ('c1', 'memory-chat-w3', '{}', 1, 0)")
    con.close()
    store = RunStore(db)
    assert store.conversation("c1")["history"] == []
    model = ScriptedChatModel(["Second answer."])
    _turn(store, model, "Again?", "c1")
    assert store.conversation("c1")["history"] == [_user("Again?"), _bot("Second answer.")]
    assert store.conversation("c1")["dialogue_count"] == 2


@pytest.fixture
def stub_model():
    """An OpenAI-shaped server on 127.0.0.1 that numbers its replies; yields (model spec, recorded requests)."""
    from tests.llm.openai_stub import serve_stub

    def reply(messages, body):
        return f"answer {sum(m['role'] == 'user' for m in messages)}"

    with serve_stub(reply) as (url, requests):
        yield f"openai:{url}#stub-model", requests


def _contents(request) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in request["body"]["messages"]]


def test_http_chat_messages_remember_and_the_cli_continues(stub_model, monkeypatch):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from athanor.serve.workflow_routes import router
    from athanor.workflow.cli import workflow_app

    spec, requests = stub_model
    monkeypatch.setenv("ATHANOR_WORKFLOW_MODEL", spec)
    apps = Path(os.environ["ATHANOR_HOME"]) / "workflows" / "apps"
    apps.mkdir(parents=True)
    shutil.copy(APP, apps / "memory.yml")
    shutil.copy(FIXTURES_W1 / "hello_branch_chat_w1.yml", apps / "hello.yml")
    api = FastAPI()
    api.include_router(router)
    client = TestClient(api)
    first = client.post("/v1/chat-messages", json={"query": "I live in Oslo.", "response_mode": "blocking",
                                                   "app": "memory", "user": "u1"}).json()
    assert first["answer"] == "answer 1"
    conversation = first["conversation_id"]
    with client.stream("POST", "/v1/chat-messages", json={"query": "Where do I live?", "response_mode": "streaming",
                                                          "app": "memory", "conversation_id": conversation,
                                                          "user": "u1"}) as r:
        assert r.status_code == 200
        saved_at_finish = [len(RunStore().conversation(conversation)["history"])
                           for line in r.iter_lines() if '"workflow_finished"' in line]
    assert saved_at_finish == [4]  # sent only once the turn is saved, so a client may go on at once
    elsewhere = client.post("/v1/chat-messages", json={"query": "hi", "app": "hello", "conversation_id": conversation,
                                                       "response_mode": "blocking"})
    assert elsewhere.status_code == 404  # a conversation belongs to its app
    assert _contents(requests[1])[1:] == [("user", "I live in Oslo."), ("assistant", "answer 1"),
                                          ("user", "Where do I live?")]
    from athanor.serve.workflow_routes import MODEL_CACHE

    assert spec in MODEL_CACHE  # loaded once, kept for the server's next requests
    # the CLI, with fresh objects over the same database, continues the conversation started over HTTP
    result = CliRunner().invoke(workflow_app, ["run", str(APP), "-q", "And my city?", "--conversation-id",
                                               conversation])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "answer 3"  # the default model came from $ATHANOR_WORKFLOW_MODEL
    assert _contents(requests[2])[1:] == [("user", "I live in Oslo."), ("assistant", "answer 1"),
                                          ("user", "Where do I live?"), ("assistant", "answer 2"),
                                          ("user", "And my city?")]
    assert len(RunStore().conversation(conversation)["history"]) == 6
    other = CliRunner().invoke(workflow_app, ["run", str(FIXTURES_W1 / "hello_branch_chat_w1.yml"), "-q", "hi",
                                              "--conversation-id", conversation])
    assert other.exit_code != 0 and "belongs to app 'memory-chat-w3'" in str(other.exception)
