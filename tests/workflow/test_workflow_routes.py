"""HTTP routes in Dify's API shape (FastAPI TestClient): blocking and streaming runs, run lookup, chat-messages."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.workflow.conftest import FIXTURES


@pytest.fixture
def client():
    from athanor.serve.workflow_routes import router

    apps = Path(os.environ["ATHANOR_HOME"]) / "workflows" / "apps"
    apps.mkdir(parents=True)
    for name in ("parallel_branches_w1", "hello_branch_chat_w1", "iteration_format_w1"):
        shutil.copy(FIXTURES / f"{name}.yml", apps / f"{name}.yml")
    app = FastAPI()
    app.include_router(router)
    return TestClient(app)


def _sse(response) -> list[dict]:
    lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    return [json.loads(line[len("data: "):]) for line in lines]


def test_blocking_run_and_lookup(client):
    r = client.post("/v1/workflows/run", json={"inputs": {"switch": 1}, "response_mode": "blocking", "user": "u1",
                                               "app": "parallel_branches_w1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["data"]["status"] == "succeeded"
    assert body["data"]["outputs"] == {"1": "Code 1", "2": "Code 2", "3": None}
    got = client.get(f"/v1/workflows/run/{body['workflow_run_id']}").json()
    assert got["status"] == "succeeded" and got["inputs"] == {"switch": 1} and got["outputs"] == body["data"]["outputs"]
    assert got["total_steps"] == 5 and len(got["node_executions"]) == 5
    missing = client.get("/v1/workflows/run/does-not-exist")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_streaming_run_sends_dify_events(client):
    with client.stream("POST", "/v1/workflows/run", json={"inputs": {}, "response_mode": "streaming",
                                                          "app": "iteration_format_w1"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = _sse(r)
    names = [e["event"] for e in events]
    assert names[0] == "workflow_started" and names[-1] == "workflow_finished"
    assert {"iteration_started", "iteration_next", "iteration_completed", "node_started", "node_finished"} <= set(names)
    assert events[-1]["data"]["outputs"] == {"output": ["output: 1", "output: 2", "output: 3"]}
    run_id = events[0]["workflow_run_id"]
    assert client.get(f"/v1/workflows/run/{run_id}").json()["status"] == "succeeded"


def test_bad_requests(client):
    r = client.post("/v1/workflows/run", json={"inputs": {}, "response_mode": "blocking", "app": "parallel_branches_w1"})
    assert r.status_code == 400 and r.json() == {"code": "invalid_param", "message": "input 'switch' is required",
                                                 "status": 400}
    r = client.post("/v1/workflows/run", json={"inputs": {}, "response_mode": "streaming", "app": "nope"})
    assert r.status_code == 404 and r.json()["code"] == "app_not_found"
    r = client.post("/v1/workflows/run", json={"inputs": {}, "response_mode": "blocking", "app": "hello_branch_chat_w1"})
    assert r.status_code == 400 and "/v1/chat-messages" in r.json()["message"]
    r = client.post("/v1/workflows/run", json={"inputs": {}, "response_mode": "sometimes"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_param" and "response_mode" in r.json()["message"]


def test_chat_messages_keep_conversation_variables(client):
    first = client.post("/v1/chat-messages", json={"query": "hello there", "inputs": {}, "response_mode": "blocking",
                                                   "user": "u"})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["event"] == "message" and body["answer"] == "Hi there! turn 1" and body["mode"] == "advanced-chat"
    conversation = body["conversation_id"]
    with client.stream("POST", "/v1/chat-messages", json={"query": "hello again", "inputs": {},
                                                          "response_mode": "streaming", "user": "u",
                                                          "conversation_id": conversation}) as r:
        events = _sse(r)
    answer = "".join(e["answer"] for e in events if e["event"] == "message")
    assert answer == "Hi there! turn 2"
    assert {e["conversation_id"] for e in events} == {conversation}
    assert [e["event"] for e in events][-2:] == ["message_end", "workflow_finished"]
    from athanor.workflow.runs import RunStore

    assert RunStore().conversation(conversation)["variables"] == {"turns": ["hello there", "hello again"]}
    lost = client.post("/v1/chat-messages", json={"query": "x", "conversation_id": "unknown", "response_mode": "blocking"})
    assert lost.status_code == 404


def test_routes_on_a_real_serve_app_streaming_over_a_socket(client):
    """Mounted into `athanor serve`'s app (as the lead wires it), on uvicorn at 127.0.0.1, read with httpx."""
    import httpx

    from athanor.serve.app import create_app
    from athanor.serve.background import serve_in_thread
    from athanor.serve.workflow_routes import router

    app = create_app()
    app.include_router(router)
    with serve_in_thread(app) as (url, _):
        events = []
        with httpx.stream("POST", f"{url}/v1/chat-messages", json={"query": "hello socket", "response_mode": "streaming",
                                                                    "app": "hello_branch_chat_w1"}, timeout=30) as r:
            assert r.status_code == 200
            events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
        assert "".join(e["answer"] for e in events if e["event"] == "message") == "Hi there! turn 1"
        run_id = events[0]["workflow_run_id"]
        got = httpx.get(f"{url}/v1/workflows/run/{run_id}", timeout=10).json()
        assert got["status"] == "succeeded" and got["outputs"] == {"answer": "Hi there! turn 1"}
        listed = httpx.get(f"{url}/v1/workflows/apps", timeout=10).json()["data"]
        assert {a["name"] for a in listed} == {"parallel_branches_w1", "hello_branch_chat_w1", "iteration_format_w1"}
