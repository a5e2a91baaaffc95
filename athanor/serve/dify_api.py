"""Dify's service API, as Dify's SDKs call it: one API key per app, every app mode.

    POST /v1/chat-messages                 chat, agent-chat, advanced-chat apps (blocking | streaming SSE)
    POST /v1/chat-messages/{task}/stop     stop a running answer            (and /v1/completion-messages/{task}/stop,
    POST /v1/completion-messages           completion apps                   /v1/workflows/tasks/{task}/stop)
    POST /v1/workflows/run                 workflow apps
    POST /v1/files/upload                  multipart `file` + `user` -> an upload id for `files` / file inputs
    GET  /v1/parameters, /v1/info, /v1/meta           the app's input form and features
    GET  /v1/messages?conversation_id=&user=          a conversation's messages (oldest first, paged by first_id)
    POST /v1/messages/{id}/feedbacks                  like / dislike
    GET  /v1/conversations?user=&last_id=&limit=      a user's conversations;  POST .../{id}/name;  DELETE .../{id}

The app comes from the key (`Authorization: Bearer app-...`, made by `athanor workflow import FILE --name
NAME`, kept in the runs database by service_store.py); without an app key, the `app` field or the
`X-Athanor-App` header names an installed app, or the only app of the right mode is used (athanor's own
addition). Streams use Dify's event shapes: full workflow events for workflow / advanced-chat apps;
`message` + `message_end` for chat and completion apps; `agent_thought` + `agent_message` + `message_end`
for agent-chat apps. Files are uploads only: a request names an upload id (or a remote URL, which nothing
here fetches), never a server path, and document extraction reads only the uploads folder.
Errors use Dify's shape `{"code", "message", "status"}`. Not for: graph semantics (engine.py), a run and its
event translation (dify_turn.py), file references (dify_files.py), the read-only routes
(dify_info.py), storage (service_store.py, runs.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile

from athanor.errors import AthanorError
from athanor.serve import workflow_routes as routes
from athanor.serve.dify_files import file_inputs, resolve_files
from athanor.serve.dify_turn import TASKS, Turn
from athanor.serve.workflow_routes import DifyError, _error

router = APIRouter(tags=["dify"])
CHAT_MODES = ("chat", "agent-chat", "advanced-chat")
MAX_UPLOAD_BYTES = 15 * 1024 * 1024


class _Base(BaseModel):
    inputs: dict[str, Any] = Field(default_factory=dict)
    response_mode: Literal["blocking", "streaming"] | None = None
    user: str = "user"
    files: list[dict] | None = None
    app: str | None = None  # athanor's addition: pick an installed app by name when there is no app key


class ChatBody(_Base):
    query: str = Field(min_length=1)
    conversation_id: str | None = None
    auto_generate_name: bool = True


# --------------------------------------------------------------------------------------------- apps and keys


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def accepts_app_key(path: str, method: str, token: str) -> bool:
    """For the server's auth middleware: whether `token` is an app key and the route is one of Dify's
    (so an app key opens only its app's service API, never the model APIs)."""
    if not token.startswith("app-") or not is_dify_route(path, method):
        return False
    from athanor.workflow.service_store import ServiceStore

    return ServiceStore().app_for_key(token) is not None


def is_dify_route(path: str, method: str) -> bool:
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return method == "GET" or path.endswith("/feedbacks")  # POST /v1/messages is the Anthropic API
    return path.startswith(("/v1/chat-messages", "/v1/completion-messages", "/v1/workflows/", "/v1/files/upload",
                            "/v1/conversations")) or path in ("/v1/parameters", "/v1/info", "/v1/meta")


def _resolve(request: Request, name: str | None, modes: tuple[str, ...], wrong: tuple[str, str]):
    """(installed name, App) for this request: by app key, else by name / header / the only one of these modes."""
    from athanor.workflow.dsl import load_app
    from athanor.workflow.service_store import ServiceStore

    token = _bearer(request)
    if token.startswith("app-"):
        name = ServiceStore().app_for_key(token)
        if name is None:
            raise DifyError("Access token is invalid", 401, "unauthorized")
    name = name or request.headers.get("x-athanor-app")
    files = _app_files()
    if name:
        match = [f for f in files if f.stem == name]
        if not match:
            raise DifyError(f"app {name!r} is not installed (athanor workflow import FILE --name {name})", 404,
                            "app_not_found")
        app = load_app(match[0])
    else:
        apps = [(f.stem, a) for f, a in ((f, _load_quiet(f)) for f in files) if a is not None and a.mode in modes]
        if len(apps) != 1:
            raise DifyError(f"{len(apps)} {' / '.join(modes)} apps installed; send the app's key "
                            "(Authorization: Bearer app-...) or name it with the 'app' field", 400, "app_unavailable")
        name, app = apps[0]
    if app.mode not in modes:
        code, route = wrong
        raise DifyError(f"app {name!r} is a {app.mode} app; use {_route_for(app.mode)} (not {route})", 400, code)
    return name, app


def _route_for(mode: str) -> str:
    return {"workflow": "/v1/workflows/run", "completion": "/v1/completion-messages"}.get(mode, "/v1/chat-messages")


def _app_files():
    folder = routes.apps_dir()
    return sorted([*folder.glob("*.yml"), *folder.glob("*.yaml"), *folder.glob("*.json")])


def _load_quiet(path):
    from athanor.workflow.dsl import load_app

    try:
        return load_app(path)
    except AthanorError:
        return None


def _body(model: type[BaseModel], data: Any) -> BaseModel:
    """Request JSON -> the body model; a one-line 400 in Dify's shape when it does not fit."""
    try:
        return model.model_validate(data if isinstance(data, dict) else {})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise DifyError(f"{where}: {first.get('msg', 'invalid')}", 400, "invalid_param") from None


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        raise DifyError("the request body is not JSON", 400, "invalid_param") from None


# --------------------------------------------------------------------------------------------- files and runs


@router.post("/v1/files/upload", status_code=201)
async def upload_file(request: Request):
    try:
        name, _ = _resolve(request, request.headers.get("x-athanor-app"), ("workflow", "completion", *CHAT_MODES),
                           ("app_unavailable", "/v1/files/upload"))
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES + 65536:  # refuse before spooling it to disk
            raise DifyError(f"file is larger than {MAX_UPLOAD_BYTES // 2**20} MB", 413, "file_too_large")
        form = await request.form(max_files=2, max_fields=8)
        file = form.get("file")
        if not isinstance(file, UploadFile) or not file.filename:
            raise DifyError("no file uploaded (multipart field 'file')", 400, "no_file_uploaded")
        if len(form.getlist("file")) > 1:
            raise DifyError("only one file per request", 400, "too_many_files")
        data = await file.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise DifyError(f"file is larger than {MAX_UPLOAD_BYTES // 2**20} MB", 413, "file_too_large")
        from athanor.workflow.service_store import ServiceStore

        row = ServiceStore().add_upload(name, str(form.get("user") or "user"), file.filename, data,
                                        file.content_type or "application/octet-stream")
    except DifyError as e:
        return _error(e)
    return JSONResponse({"id": row["id"], "name": row["name"], "size": row["size"], "extension": row["extension"],
                         "mime_type": row["mime_type"], "created_by": row["user_id"],
                         "created_at": int(row["created_at"])}, status_code=201)


def _inputs(app, raw: dict, app_name: str, first: dict | None = None) -> dict:
    """A request's inputs for `app`: file variables resolved from uploads, over `first` (a conversation's first
    inputs, which Dify keeps), checked against the start node (a 400 before any stream starts, as in Dify)."""
    from athanor.workflow.engine import WorkflowEngine
    from athanor.workflow.nodes.basic import coerce_start_inputs

    graph = WorkflowEngine(app, routes._services()).graph(None)
    start = graph.nodes[graph.roots[0]].data
    inputs = {**(first or {}), **file_inputs(start, raw, app_name)}
    coerce_start_inputs(start, dict(inputs))
    return inputs


def _guard(fn):
    """Dify's error shape for every failure a request can cause."""
    import functools

    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        try:
            return await fn(*args, **kwargs)
        except DifyError as e:
            return _error(e)
        except (AthanorError, ValueError) as e:
            return _error(DifyError(str(e)))

    return wrapper


@router.post("/v1/chat-messages")
@_guard
async def chat_messages(request: Request):
    from athanor.workflow.runs import RunStore
    from athanor.workflow.service_store import ServiceStore

    body = _body(ChatBody, await _json(request))
    name, app = _resolve(request, body.app, CHAT_MODES, ("not_chat_app", "/v1/chat-messages"))
    conversation_id = (body.conversation_id or "").strip() or None
    saved = RunStore().conversation(conversation_id) if conversation_id else None
    if conversation_id and (saved is None or saved.get("app_name") != app.name):
        raise DifyError("Conversation Not Exists.", 404, "not_found")
    meta = ServiceStore().conversation_meta(conversation_id) if conversation_id else None
    if meta is not None and meta["user_id"] != body.user:  # as in Dify, a conversation is its end user's
        raise DifyError("Conversation Not Exists.", 404, "not_found")
    inputs = _inputs(app, body.inputs, name, (meta or {}).get("inputs"))
    count, history = (saved or {}).get("dialogue_count", 0) + 1, (saved or {}).get("history") or []
    turn = Turn(name, app, body.user, body.query, conversation_id)
    kwargs = {"inputs": inputs, "query": body.query, "files": resolve_files(body.files, name),
              "conversation_id": conversation_id, "dialogue_count": count,
              "conversation": (saved or {}).get("variables"), "history": history}

    def remember(store, result):
        message_id = result.message_id or turn.message_id
        if result.status != "failed":
            store.save_turn(app.name, result, body.query, count, history)
            service = ServiceStore()
            service.touch_conversation(result.conversation_id, name, body.user, inputs, _title(body.query))
            service.add_message(message_id, name, result.conversation_id, body.user, body.query, result.answer,
                                inputs, result.status, result.error, result.run_id)

    if body.response_mode == "streaming":
        return StreamingResponse(turn.start(kwargs, True, remember), media_type="text/event-stream")
    r = await asyncio.to_thread(turn.start, kwargs, False, remember)
    if r.status == "failed":
        raise DifyError(r.error or "the run failed", 400, "completion_request_error")
    return {"event": "message", "task_id": turn.task_id, "id": r.message_id, "message_id": r.message_id,
            "conversation_id": r.conversation_id, "mode": app.mode, "answer": r.answer,
            "metadata": {"usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": r.total_tokens},
                         "retriever_resources": []}, "created_at": turn.created_at}


def _title(query: str) -> str:
    line = " ".join(query.split())
    return line[:40] + ("..." if len(line) > 40 else "")


@router.post("/v1/completion-messages")
@_guard
async def completion_messages(request: Request):
    from athanor.workflow.service_store import ServiceStore

    body = _body(_Base, await _json(request))
    name, app = _resolve(request, body.app, ("completion",), ("app_unavailable", "/v1/completion-messages"))
    inputs = _inputs(app, body.inputs, name)
    turn = Turn(name, app, body.user)
    kwargs = {"inputs": inputs, "files": resolve_files(body.files, name)}

    def remember(store, result):
        answer = str((result.outputs or {}).get("answer") or "")
        ServiceStore().add_message(turn.message_id, name, None, body.user, str(inputs.get("query") or ""), answer,
                                   inputs, result.status, result.error, result.run_id)

    if body.response_mode == "streaming":
        return StreamingResponse(turn.start(kwargs, True, remember), media_type="text/event-stream")
    r = await asyncio.to_thread(turn.start, kwargs, False, remember)
    if r.status == "failed":
        raise DifyError(r.error or "the run failed", 400, "completion_request_error")
    return {"event": "message", "task_id": turn.task_id, "id": turn.message_id, "message_id": turn.message_id,
            "mode": "completion", "answer": str((r.outputs or {}).get("answer") or ""),
            "metadata": {"usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": r.total_tokens},
                         "retriever_resources": []}, "created_at": turn.created_at}


@router.post("/v1/workflows/run")
@_guard
async def run_workflow(request: Request):
    body = _body(_Base, await _json(request))
    name, app = _resolve(request, body.app, ("workflow",), ("not_workflow_app", "/v1/workflows/run"))
    inputs = _inputs(app, body.inputs, name)
    turn = Turn(name, app, body.user)
    kwargs = {"inputs": inputs, "files": resolve_files(body.files, name)}
    if body.response_mode == "streaming":
        return StreamingResponse(turn.start(kwargs, True), media_type="text/event-stream")
    r = await asyncio.to_thread(turn.start, kwargs, False)
    return {"workflow_run_id": r.run_id, "task_id": turn.task_id,
            "data": {"id": r.run_id, "workflow_id": app.name, "status": r.status, "outputs": r.outputs,
                     "error": r.error, "elapsed_time": r.elapsed_time, "total_tokens": r.total_tokens,
                     "total_steps": r.total_steps, "exceptions_count": r.exceptions_count,
                     "created_at": turn.created_at, "finished_at": int(time.time())}}


async def _stop(request: Request, task_id: str, modes: tuple[str, ...], route: str):
    data = await _json(request)
    body_app = data.get("app") if isinstance(data, dict) else None
    name, _ = _resolve(request, body_app, modes, ("app_unavailable", route))
    owner, flag = TASKS.get(task_id, (None, None))
    if flag is not None and owner == name:
        flag.set()
    return {"result": "success"}  # as Dify: success whether or not the task was still running


@router.post("/v1/chat-messages/{task_id}/stop")
@_guard
async def stop_chat(request: Request, task_id: str):
    return await _stop(request, task_id, CHAT_MODES, "/v1/chat-messages")


@router.post("/v1/completion-messages/{task_id}/stop")
@_guard
async def stop_completion(request: Request, task_id: str):
    return await _stop(request, task_id, ("completion",), "/v1/completion-messages")


@router.post("/v1/workflows/tasks/{task_id}/stop")
@_guard
async def stop_workflow(request: Request, task_id: str):
    return await _stop(request, task_id, ("workflow",), "/v1/workflows/run")


from athanor.serve import dify_info as service_info  # noqa: F401  (the read-only routes register on this router)
