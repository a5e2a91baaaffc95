"""HTTP routes for workflows in Dify's API shape, a FastAPI `router` for `athanor serve` to include.

    POST /v1/workflows/run        {inputs, response_mode: blocking|streaming, user, files, app?}
    GET  /v1/workflows/run/{id}   a persisted run
    POST /v1/chat-messages        advanced-chat apps: {query, inputs, response_mode, user, conversation_id, app?}
    GET  /v1/workflows/apps       the installed apps (our addition)

Apps are Dify DSL files in `$ATHANOR_HOME/workflows/apps/NAME.yml`. Dify picks the app by API key; here the
request names it (`app` field or `X-Athanor-App` header), or the only installed app of the right mode is used.
Models: `$ATHANOR_HOME/workflows/model_map.yml` when present, and `$ATHANOR_WORKFLOW_MODEL` as the default.
Streaming answers are Server-Sent Events, one `data: {json}` line per Dify event. Errors use Dify's shape
`{"code", "message", "status"}`. Not for: graph semantics (engine.py).
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from athanor.errors import AthanorError

router = APIRouter(tags=["workflows"])
_END = object()
MODEL_CACHE: dict = {}  # model spec -> loaded ChatModel, shared by every request (each model loads once)


class WorkflowRunRequest(BaseModel):
    inputs: dict[str, Any] = Field(default_factory=dict)
    response_mode: Literal["blocking", "streaming"] = "streaming"
    user: str = "user"
    files: list[dict] = Field(default_factory=list)
    app: str | None = Field(None, description="installed app name (Dify picks it by API key)")


class ChatMessageRequest(WorkflowRunRequest):
    query: str = Field(min_length=1)
    conversation_id: str | None = None


class DifyError(Exception):
    def __init__(self, message: str, status: int = 400, code: str = "invalid_param"):
        super().__init__(message)
        self.message, self.status, self.code = message, status, code


def _error(e: DifyError) -> JSONResponse:
    return JSONResponse({"code": e.code, "message": e.message, "status": e.status}, status_code=e.status)


def _home() -> Path:
    return Path(os.environ.get("ATHANOR_HOME") or "~/.athanor").expanduser() / "workflows"


def apps_dir() -> Path:
    return _home() / "apps"


def _find_app(name: str | None, mode: str):
    from athanor.workflow.dsl import load_app

    files = sorted([*apps_dir().glob("*.yml"), *apps_dir().glob("*.yaml"), *apps_dir().glob("*.json")])
    if name:
        match = [f for f in files if f.stem == name]
        if not match:
            raise DifyError(f"app {name!r} is not installed (put its DSL file in {apps_dir()})", 404, "app_not_found")
        app = load_app(match[0])
    else:
        apps = [a for a in (load_app(f) for f in files) if a.mode == mode]
        if len(apps) != 1:
            raise DifyError(f"{len(apps)} {mode} apps installed; name one with the 'app' field", 400, "app_unavailable")
        app = apps[0]
    if app.mode != mode:
        raise DifyError(f"app {app.name!r} is a {app.mode} app; use the "
                        f"{'/v1/chat-messages' if app.mode == 'advanced-chat' else '/v1/workflows/run'} route",
                        400, "app_unavailable")
    return app


def _services():
    from athanor.workflow.services import Services

    model_map = _home() / "model_map.yml"
    return Services.from_options(os.environ.get("ATHANOR_WORKFLOW_MODEL") or None,
                                 str(model_map) if model_map.is_file() else None, MODEL_CACHE)


def _start(app, run_kwargs: dict, user: str, stream: bool, on_done=None):
    """Run in a thread. Streaming: an iterator of SSE lines; blocking: (RunResult)."""
    from athanor.workflow.engine import WorkflowEngine
    from athanor.workflow.runs import RunStore

    store = RunStore()
    events: queue.Queue = queue.Queue()
    services = _services()
    held: list[dict] = []  # workflow_finished goes out after on_done: a client that sees it may send the next turn

    def to_client(event: dict) -> None:
        if event.get("event") == "workflow_finished":
            held.append(event)
        else:
            events.put(event)

    engine = WorkflowEngine(app, services, [store.observer(app, user), to_client] if stream else
                            [store.observer(app, user)])

    def finish():
        try:
            result = engine.run(**run_kwargs, user=user)
        finally:
            services.close()  # the knowledge bases this run opened
        if on_done:
            on_done(store, result)
        return result

    def work():
        try:
            finish()
        except AthanorError as e:  # input problems found before the run started
            events.put({"event": "error", "status": 400, "code": "invalid_param", "message": str(e)})
        finally:
            for event in held:
                events.put(event)
            events.put(_END)

    if not stream:
        return finish()
    threading.Thread(target=work, daemon=True, name="wf-run").start()

    def lines():
        while (event := events.get()) is not _END:
            yield f"data: {json.dumps(event, ensure_ascii=False, default=str)}\n\n"

    return lines()


@router.post("/v1/workflows/run")
def run_workflow(body: WorkflowRunRequest, x_athanor_app: str | None = Header(None)):
    try:
        app = _find_app(body.app or x_athanor_app, "workflow")
        if body.response_mode == "streaming":
            _check_inputs(app, body.inputs)
            return StreamingResponse(_start(app, {"inputs": body.inputs, "files": body.files}, body.user, True),
                                     media_type="text/event-stream")
        r = _start(app, {"inputs": body.inputs, "files": body.files}, body.user, False)
    except DifyError as e:
        return _error(e)
    except AthanorError as e:
        return _error(DifyError(str(e)))
    return {"workflow_run_id": r.run_id, "task_id": r.run_id,
            "data": {"id": r.run_id, "workflow_id": app.name, "status": r.status, "outputs": r.outputs,
                     "error": r.error, "elapsed_time": r.elapsed_time, "total_tokens": r.total_tokens,
                     "total_steps": r.total_steps, "exceptions_count": r.exceptions_count}}


def _check_inputs(app, inputs: dict) -> None:
    """Bad inputs answer 400 before a stream starts (as Dify does)."""
    from athanor.workflow.engine import WorkflowEngine
    from athanor.workflow.nodes.basic import coerce_start_inputs

    graph = WorkflowEngine(app, _services()).graph(None)
    coerce_start_inputs(graph.nodes[graph.roots[0]].data, dict(inputs))


@router.get("/v1/workflows/run/{run_id}")
def get_run(run_id: str):
    from athanor.workflow.runs import RunStore

    try:
        run = RunStore().get_run(run_id, prefix=False)
    except AthanorError as e:
        return _error(DifyError(str(e), 404, "not_found"))
    return {"id": run["id"], "workflow_id": run["app_name"], "status": run["status"], "inputs": run["inputs"],
            "outputs": run["outputs"], "error": run["error"], "total_steps": run["total_steps"],
            "total_tokens": run["total_tokens"], "created_at": int(run["created_at"] or 0),
            "finished_at": int(run["finished_at"]) if run["finished_at"] else None,
            "elapsed_time": run["elapsed_time"], "node_executions": run["node_executions"]}


@router.post("/v1/chat-messages")
def chat_messages(body: ChatMessageRequest, x_athanor_app: str | None = Header(None)):
    from athanor.workflow.runs import RunStore

    try:
        app = _find_app(body.app or x_athanor_app, "advanced-chat")
        saved = RunStore().conversation(body.conversation_id) if body.conversation_id else None
        if body.conversation_id and (saved is None or saved.get("app_name") != app.name):
            raise DifyError(f"conversation {body.conversation_id!r} not found", 404, "not_found")
        count, history = (saved or {}).get("dialogue_count", 0) + 1, (saved or {}).get("history") or []
        kwargs = {"inputs": body.inputs, "query": body.query, "files": body.files,
                  "conversation_id": body.conversation_id, "dialogue_count": count,
                  "conversation": (saved or {}).get("variables"), "history": history}

        def remember(store, result):
            if result.status != "failed":
                store.save_turn(app.name, result, body.query, count, history)

        if body.response_mode == "streaming":
            _check_inputs(app, body.inputs)
            return StreamingResponse(_start(app, kwargs, body.user, True, remember), media_type="text/event-stream")
        r = _start(app, kwargs, body.user, False, remember)
    except DifyError as e:
        return _error(e)
    except AthanorError as e:
        return _error(DifyError(str(e)))
    if r.status == "failed":
        return _error(DifyError(r.error or "workflow failed", 500, "completion_request_error"))
    return {"event": "message", "task_id": r.run_id, "id": r.message_id, "message_id": r.message_id,
            "conversation_id": r.conversation_id, "mode": "advanced-chat", "answer": r.answer,
            "metadata": {"usage": {"total_tokens": r.total_tokens}}, "created_at": int(time.time())}


@router.get("/v1/workflows/apps")
def list_apps(request: Request):
    from athanor.workflow.dsl import load_app

    out = []
    for f in sorted(apps_dir().glob("*.y*ml")):
        try:
            app = load_app(f)
            out.append({"name": f.stem, "title": app.name, "mode": app.mode})
        except AthanorError as e:
            out.append({"name": f.stem, "error": str(e)})
    return {"data": out}
