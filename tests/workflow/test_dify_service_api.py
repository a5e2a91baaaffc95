"""Dify's service API driven by Dify's own Python SDK (`dify-client`) against `athanor serve`'s app on uvicorn
at 127.0.0.1: apps installed with `athanor workflow import` (one key each), every app mode, blocking and
streaming, conversations, messages, parameters, uploads, stop. The model is scripted (the SDK and the HTTP
shapes are what is under test); tests/workflow/test_dify_apps.py runs the same apps' prompts.

dify-client 0.1.10 (the newest on PyPI) has ChatClient, CompletionClient and DifyClient (parameters, upload,
feedback); workflow runs, stop and delete are sent with `requests` in the same way the SDK sends everything
(Authorization: Bearer app-..., JSON bodies).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from typer.testing import CliRunner

from tests.agent.scripted import ScriptedChatModel
from tests.workflow.conftest import dify_app, edge, end, node

FIXTURES = Path(__file__).parent / "fixtures" / "dify"
SPEC = "scripted-dify"


def _import(path: Path, name: str) -> str:
    from athanor.workflow.cli import workflow_app

    result = CliRunner().invoke(workflow_app, ["import", str(path), "--name", name])
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert key.startswith("app-")
    return key


def _extract_app(tmp_path: Path) -> Path:
    """A workflow app that reads an uploaded file (start variable of type file -> document extractor)."""
    doc = dify_app([node("start", "start", variables=[{"variable": "doc", "label": "doc", "type": "file",
                                                        "required": True, "allowed_file_types": ["document"]}]),
                    node("ext", "document-extractor", variable_selector=["start", "doc"], is_array_file=False),
                    end(text=["ext", "text"])],
                   [edge("start", "ext"), edge("ext", "end")], name="Extract")
    path = tmp_path / "extract.yml"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


@pytest.fixture
def server(tmp_path, monkeypatch):
    """(base URL, {app name: key}, the scripted model) for a server with six apps installed."""
    from athanor.serve.app import create_app
    from athanor.serve.background import serve_in_thread
    from athanor.serve.workflow_routes import MODEL_CACHE

    model = ScriptedChatModel(["Ahoy! I keep the light burning."], repeat_last=True)
    MODEL_CACHE[SPEC] = model
    monkeypatch.setenv("ATHANOR_WORKFLOW_MODEL", SPEC)
    keys = {name: _import(FIXTURES / f"{name}.yml", name)
            for name in ("chat_persona", "completion_translate", "agent_chat_time_math", "workflow_page_facts")}
    keys["extract"] = _import(_extract_app(tmp_path), "extract")
    keys["hello"] = _import(Path(__file__).parent / "fixtures" / "w1" / "hello_branch_chat_w1.yml", "hello")
    try:
        with serve_in_thread(create_app()) as (url, _):
            yield url, keys, model
    finally:
        MODEL_CACHE.pop(SPEC, None)


def _client(cls, url: str, key: str):
    client = cls(key)
    client.base_url = f"{url}/v1"
    return client


def _events(response) -> list[dict]:
    return [json.loads(line[6:]) for line in response.iter_lines(decode_unicode=True) if line.startswith("data: ")]


def test_chat_app_blocking_and_streaming_with_conversations(server):
    from dify_client import ChatClient

    url, keys, model = server
    chat = _client(ChatClient, url, keys["chat_persona"])
    r = chat.create_chat_message({"persona": "a pirate", "language": "French"}, "Who are you?", "ada")
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["event"] == "message" and first["mode"] == "chat"
    assert first["answer"] == "Ahoy! I keep the light burning."
    assert model.calls[-1]["messages"] == [
        {"role": "system", "content": "You are a pirate. Answer the user in one short paragraph, in French."},
        {"role": "user", "content": "Who are you?"}]
    conversation = first["conversation_id"]

    r = chat.create_chat_message({}, "And where?", "ada", response_mode="streaming", conversation_id=conversation)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _events(r)
    assert [e["event"] for e in events][-1] == "message_end"
    assert {e["event"] for e in events} == {"message", "message_end"}  # a chat app streams messages only
    assert "".join(e["answer"] for e in events if e["event"] == "message") == "Ahoy! I keep the light burning."
    assert {e["conversation_id"] for e in events} == {conversation}
    assert model.calls[-1]["messages"][0]["content"].startswith("You are a pirate")  # the first turn's inputs stay
    assert [m["content"] for m in model.calls[-1]["messages"][1:]] == [
        "Who are you?", "Ahoy! I keep the light burning.", "And where?"]

    stranger = chat.create_chat_message({}, "Whose talk is this?", "eve", conversation_id=conversation)
    assert stranger.status_code == 404 and stranger.json()["code"] == "not_found"  # a conversation is its user's
    assert chat.get_conversation_messages("eve", conversation).status_code == 404
    listed = chat.get_conversation_messages("ada", conversation).json()
    assert [(m["query"], m["answer"]) for m in listed["data"]] == [
        ("Who are you?", "Ahoy! I keep the light burning."), ("And where?", "Ahoy! I keep the light burning.")]
    assert listed["has_more"] is False
    page = chat.get_conversation_messages("ada", conversation, first_id=listed["data"][1]["id"], limit=1).json()
    assert [m["query"] for m in page["data"]] == ["Who are you?"]
    assert chat.message_feedback(listed["data"][0]["id"], "like", "ada").json() == {"result": "success"}
    again = chat.get_conversation_messages("ada", conversation).json()["data"][0]
    assert again["feedback"] == {"rating": "like"}

    convs = chat.get_conversations("ada").json()
    assert [c["id"] for c in convs["data"]] == [conversation] and convs["data"][0]["name"] == "Who are you?"
    assert chat.get_conversations("someone-else").json()["data"] == []
    renamed = chat.rename_conversation(conversation, "Lighthouse talk", "ada").json()
    assert renamed["name"] == "Lighthouse talk"
    gone = requests.delete(f"{url}/v1/conversations/{conversation}", json={"user": "ada"},
                           headers={"Authorization": f"Bearer {keys['chat_persona']}"}, timeout=10)
    assert gone.status_code == 204
    missing = chat.create_chat_message({}, "hi", "ada", conversation_id=conversation)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_parameters_info_and_keys(server):
    from dify_client import ChatClient, DifyClient

    url, keys, _ = server
    params = _client(DifyClient, url, keys["chat_persona"]).get_application_parameters("ada").json()
    assert params["opening_statement"] == "Hello! Pick a persona and ask me anything."
    assert params["suggested_questions"] == ["What do you do all day?", "Tell me a secret."]
    assert [list(f) for f in params["user_input_form"]] == [["text-input"], ["select"]]
    assert params["user_input_form"][1]["select"]["options"] == ["English", "French", "German"]
    wf = _client(DifyClient, url, keys["workflow_page_facts"]).get_application_parameters("ada").json()
    assert wf["user_input_form"] == [{"text-input": {"label": "Status page URL", "variable": "url", "required": True,
                                                     "default": "", "max_length": 256, "options": []}}]
    headers = {"Authorization": f"Bearer {keys['completion_translate']}"}
    info = requests.get(f"{url}/v1/info", headers=headers, timeout=10).json()
    assert info["name"] == "Translator" and info["mode"] == "completion"

    bad = _client(ChatClient, url, "app-not-a-key").create_chat_message({}, "hi", "ada")
    assert bad.status_code == 401 and bad.json() == {"code": "unauthorized", "message": "Access token is invalid",
                                                     "status": 401}
    wrong_mode = _client(ChatClient, url, keys["completion_translate"]).create_chat_message({}, "hi", "ada")
    assert wrong_mode.status_code == 400 and wrong_mode.json()["code"] == "not_chat_app"
    no_query = _client(ChatClient, url, keys["chat_persona"]).create_chat_message({}, "", "ada")
    assert no_query.status_code == 400 and no_query.json()["code"] == "invalid_param"


def test_completion_app_blocking_and_streaming(server):
    from dify_client import CompletionClient

    url, keys, model = server
    client = _client(CompletionClient, url, keys["completion_translate"])
    r = client.create_completion_message({"query": "Good morning", "target_language": "Spanish"}, "blocking", "ada")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "completion" and body["answer"] == "Ahoy! I keep the light burning."
    assert model.calls[-1]["messages"] == [{"role": "user", "content": (
        "Translate the following text into Spanish. Reply with the translation only.\n\nGood morning")}]
    events = _events(client.create_completion_message({"query": "Hi", "target_language": "French"}, "streaming", "ada"))
    assert [e["event"] for e in events][-1] == "message_end"
    assert "".join(e["answer"] for e in events if e["event"] == "message") == "Ahoy! I keep the light burning."
    missing = client.create_completion_message({"target_language": "French"}, "blocking", "ada")
    assert missing.status_code == 400 and "query" in missing.json()["message"]


def test_agent_chat_streams_thoughts_and_answer(server):
    from dify_client import ChatClient

    from athanor.llm.base import ChatResponse, ToolCall, Usage

    url, keys, model = server
    model.replies[:] = [ChatResponse("", [ToolCall("c1", "eval_expression", '{"expression": "17*23"}')],
                                     "tool_calls", Usage()), "17 times 23 is 391."]
    model.repeat_last = False
    chat = _client(ChatClient, url, keys["agent_chat_time_math"])
    events = _events(chat.create_chat_message({}, "What is 17*23?", "ada", response_mode="streaming"))
    kinds = [e["event"] for e in events]
    assert "agent_thought" in kinds and kinds[-1] == "message_end"
    assert "".join(e["answer"] for e in events if e["event"] == "agent_message") == "17 times 23 is 391."
    observations = [e["observation"] for e in events if e["event"] == "agent_thought" and e["observation"]]
    assert any("391" in o for o in observations)
    tools = [t["function"]["name"] for t in model.calls[0]["tools"]]
    assert tools == ["current_time", "eval_expression"]


def test_workflow_run_upload_and_stop(server, tmp_path):
    from dify_client import DifyClient

    url, keys, model = server
    headers = {"Authorization": f"Bearer {keys['extract']}"}
    up = _client(DifyClient, url, keys["extract"]).file_upload("ada", {"file": ("notes.txt", b"Buy milk.\n",
                                                                                "text/plain")})
    assert up.status_code == 201, up.text
    upload = up.json()
    assert upload["name"] == "notes.txt" and upload["size"] == 10 and upload["extension"] == "txt"
    doc = {"type": "document", "transfer_method": "local_file", "upload_file_id": upload["id"]}
    run = requests.post(f"{url}/v1/workflows/run", headers=headers, timeout=30,
                        json={"inputs": {"doc": doc}, "response_mode": "blocking", "user": "ada"}).json()
    assert run["data"]["status"] == "succeeded" and run["data"]["outputs"] == {"text": "Buy milk.\n"}
    secret = tmp_path / "secret.txt"
    secret.write_text("server file")
    for bad in ({"transfer_method": "local_file", "upload_file_id": str(secret)},
                {"transfer_method": "local_file", "path": str(secret)}, str(secret)):
        r = requests.post(f"{url}/v1/workflows/run", headers=headers, timeout=30,
                          json={"inputs": {"doc": bad}, "response_mode": "blocking", "user": "ada"})
        assert r.status_code in (400, 404) and "server file" not in r.text
    other = requests.post(f"{url}/v1/workflows/run", timeout=30, json={"inputs": {"doc": doc}, "user": "ada"},
                          headers={"Authorization": f"Bearer {keys['workflow_page_facts']}"})
    assert other.status_code == 400  # an app key runs its own app only, and uploads belong to their app

    model.replies[:] = ["word " * 400]
    model.delay_s = 0.01
    chat_headers = {"Authorization": f"Bearer {keys['chat_persona']}"}
    with requests.post(f"{url}/v1/chat-messages", headers=chat_headers, stream=True, timeout=60,
                       json={"inputs": {}, "query": "Talk a lot", "user": "ada", "response_mode": "streaming"}) as r:
        lines = r.iter_lines(decode_unicode=True)
        first = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
        stop = requests.post(f"{url}/v1/chat-messages/{first['task_id']}/stop", headers=chat_headers,
                             json={"user": "ada"}, timeout=10)
        assert stop.json() == {"result": "success"}
        rest = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert rest[-1]["event"] == "error" and "stopped" in rest[-1]["message"]
    said = "".join(e.get("answer", "") for e in [first, *rest])
    assert 0 < len(said) < len("word " * 400)
    for route, key in (("workflows/tasks", "workflow_page_facts"), ("completion-messages", "completion_translate")):
        suffix = "/stop"
        done = requests.post(f"{url}/v1/{route}/no-such-task{suffix}", json={"user": "ada"}, timeout=10,
                             headers={"Authorization": f"Bearer {keys[key]}"})
        assert done.json() == {"result": "success"}  # as Dify: stopping a finished or unknown task is a no-op
    wrong = requests.post(f"{url}/v1/workflows/tasks/x/stop", json={"user": "ada"}, headers=chat_headers, timeout=10)
    assert wrong.status_code == 400 and wrong.json()["code"] == "app_unavailable"


def test_app_keys_pass_the_server_key_only_on_their_own_routes(tmp_path, monkeypatch):
    from dify_client import ChatClient

    from athanor.serve.app import create_app
    from athanor.serve.background import serve_in_thread
    from athanor.serve.workflow_routes import MODEL_CACHE

    MODEL_CACHE[SPEC] = ScriptedChatModel(["Hello."], repeat_last=True)
    monkeypatch.setenv("ATHANOR_WORKFLOW_MODEL", SPEC)
    key = _import(FIXTURES / "chat_persona.yml", "persona")
    try:
        with serve_in_thread(create_app(api_key="server-secret")) as (url, _):
            ok = _client(ChatClient, url, key).create_chat_message({}, "hi", "ada")
            assert ok.status_code == 200 and ok.json()["answer"] == "Hello."
            models = requests.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)
            assert models.status_code == 401  # an app key is not a server key
            assert requests.get(f"{url}/v1/models", headers={"Authorization": "Bearer server-secret"},
                                timeout=10).status_code == 200
    finally:
        MODEL_CACHE.pop(SPEC, None)


def test_advanced_chat_by_key_with_conversation_variables_and_a_too_large_upload(server):
    from dify_client import ChatClient

    url, keys, _ = server
    chat = _client(ChatClient, url, keys["hello"])
    first = chat.create_chat_message({}, "hello there", "ada").json()
    assert first["mode"] == "advanced-chat" and first["answer"] == "Hi there! turn 1"
    events = _events(chat.create_chat_message({}, "hello again", "ada", response_mode="streaming",
                                              conversation_id=first["conversation_id"]))
    kinds = [e["event"] for e in events]
    assert kinds[0] == "workflow_started" and kinds[-2:] == ["message_end", "workflow_finished"]  # full events
    assert len({e["task_id"] for e in events}) == 1
    headers = {"Authorization": f"Bearer {keys['hello']}"}
    got = requests.get(f"{url}/v1/conversations/{first['conversation_id']}/variables", params={"user": "ada"},
                       headers=headers, timeout=10).json()
    assert [(v["name"], json.loads(v["value"])) for v in got["data"]] == [("turns", ["hello there", "hello again"])]
    big = requests.post(f"{url}/v1/files/upload", headers=headers, timeout=30, data={"user": "ada"},
                        files={"file": ("big.bin", b"0" * (15 * 2**20 + 70000), "application/octet-stream")})
    assert big.status_code == 413 and big.json()["code"] == "file_too_large"
    none = requests.post(f"{url}/v1/files/upload", headers=headers, timeout=30, data={"user": "ada"},
                         files={"other": ("a.txt", b"x", "text/plain")})
    assert none.status_code == 400 and none.json()["code"] == "no_file_uploaded"
