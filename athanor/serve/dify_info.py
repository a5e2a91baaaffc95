"""The read-mostly half of Dify's service API: app parameters, info, messages and conversations.

    GET    /v1/parameters                       input form (Dify's old structure) and the app's features
    GET    /v1/info, /v1/meta                   name, description, mode; tool icons (none here)
    GET    /v1/messages?conversation_id&user&first_id&limit     oldest first, `limit` before first_id
    POST   /v1/messages/{id}/feedbacks          {rating: like | dislike | null, user}
    GET    /v1/conversations?user&last_id&limit  a user's conversations with this app, newest first
    POST   /v1/conversations/{id}/name          {name | auto_generate, user}
    DELETE /v1/conversations/{id}               {user}
    GET    /v1/conversations/{id}/variables?user   the conversation variables (advanced-chat apps)

Registered on service_api.router (imported at its end). Not for: running apps (dify_api.py).
"""

from __future__ import annotations

import json

from fastapi import Request
from fastapi.responses import Response

from athanor.serve.dify_api import CHAT_MODES, _guard, _json, _resolve, router
from athanor.serve.workflow_routes import DifyError

_ALL = ("workflow", "completion", *CHAT_MODES)
_OFF = {"enabled": False}
SYSTEM_PARAMETERS = {"file_size_limit": 15, "image_file_size_limit": 10, "audio_file_size_limit": 50,
                     "video_file_size_limit": 100, "workflow_file_upload_limit": 10}


def _features(app) -> dict:
    if app.mode in ("workflow", "advanced-chat"):
        return dict(app.features)
    return dict(app.raw.get("model_config") or {})


def input_form(app) -> list[dict]:
    """The start node's variables in Dify's old `user_input_form` structure: [{type: {label, variable, ...}}]."""
    from athanor.workflow.engine import WorkflowEngine

    graph = WorkflowEngine(app).graph(None)
    out = []
    for var in graph.nodes[graph.roots[0]].data.get("variables") or []:
        kind = var.get("type", "text-input")
        spec = {"label": var.get("label") or var.get("variable"), "variable": var.get("variable"),
                "required": bool(var.get("required")), "default": var.get("default") or ""}
        for key in ("max_length", "options", "allowed_file_types", "allowed_file_extensions"):
            if key in var:
                spec[key] = var[key]
        out.append({kind: spec})
    return out


@router.get("/v1/parameters")
@_guard
async def parameters(request: Request):
    _, app = _resolve(request, request.query_params.get("app"), _ALL, ("app_unavailable", "/v1/parameters"))
    f = _features(app)
    return {"opening_statement": f.get("opening_statement") or "",
            "suggested_questions": f.get("suggested_questions") or [],
            "suggested_questions_after_answer": f.get("suggested_questions_after_answer") or _OFF,
            "speech_to_text": f.get("speech_to_text") or _OFF, "text_to_speech": f.get("text_to_speech") or _OFF,
            "retriever_resource": f.get("retriever_resource") or _OFF,
            "annotation_reply": f.get("annotation_reply") or _OFF, "more_like_this": f.get("more_like_this") or _OFF,
            "user_input_form": input_form(app),
            "sensitive_word_avoidance": f.get("sensitive_word_avoidance") or {"enabled": False, "type": "",
                                                                                "configs": []},
            "file_upload": f.get("file_upload") or {"image": {"enabled": False, "number_limits": 3, "detail": "high",
                                                              "transfer_methods": ["remote_url", "local_file"]}},
            "system_parameters": SYSTEM_PARAMETERS}


@router.get("/v1/info")
@_guard
async def info(request: Request):
    _, app = _resolve(request, request.query_params.get("app"), _ALL, ("app_unavailable", "/v1/info"))
    meta = app.raw.get("app") or {}
    return {"name": app.name, "description": meta.get("description") or "", "tags": [], "mode": app.mode,
            "author_name": ""}


@router.get("/v1/meta")
@_guard
async def meta(request: Request):
    _resolve(request, request.query_params.get("app"), _ALL, ("app_unavailable", "/v1/meta"))
    return {"tool_icons": {}}


def _limit(request: Request, default: int = 20) -> int:
    raw = request.query_params.get("limit") or default
    try:
        value = int(raw)
    except ValueError:
        raise DifyError(f"limit {raw!r} is not a number", 400, "invalid_param") from None
    if not 1 <= value <= 100:
        raise DifyError("limit must be between 1 and 100", 400, "invalid_param")
    return value


def _own_conversation(store, conversation_id: str, name: str, user: str | None) -> dict:
    meta = store.conversation_meta(conversation_id)
    if meta is None or meta["app_name"] != name or (user and meta["user_id"] != user):
        raise DifyError("Conversation Not Exists.", 404, "not_found")
    return meta


@router.get("/v1/messages")
@_guard
async def messages(request: Request):
    from athanor.workflow.service_store import ServiceStore

    q = request.query_params
    name, _ = _resolve(request, q.get("app"), CHAT_MODES, ("not_chat_app", "/v1/messages"))
    if not q.get("conversation_id"):
        raise DifyError("conversation_id is required", 400, "invalid_param")
    store = ServiceStore()
    _own_conversation(store, q["conversation_id"], name, q.get("user"))
    rows, more = store.messages(q["conversation_id"], q.get("first_id"), _limit(request))
    data = [{"id": r["id"], "conversation_id": r["conversation_id"], "parent_message_id": None, "inputs": r["inputs"],
             "query": r["query"], "answer": r["answer"], "message_files": [],
             "feedback": {"rating": r["feedback"]} if r["feedback"] else None, "retriever_resources": [],
             "agent_thoughts": [], "created_at": int(r["created_at"]), "status": "normal" if r["status"] != "failed"
             else "error", "error": r["error"]} for r in rows]
    return {"limit": _limit(request), "has_more": more, "data": data}


@router.post("/v1/messages/{message_id}/feedbacks")
@_guard
async def feedback(request: Request, message_id: str):
    from athanor.workflow.service_store import ServiceStore

    body = await _json(request)
    body = body if isinstance(body, dict) else {}
    name, _ = _resolve(request, body.get("app"), (*CHAT_MODES, "completion"), ("app_unavailable", "/v1/messages"))
    store = ServiceStore()
    row = store.message(message_id)
    if row is None or row["app_name"] != name:
        raise DifyError("Message Not Exists.", 404, "not_found")
    rating = body.get("rating")
    if rating not in ("like", "dislike", None):
        raise DifyError("rating must be like, dislike or null", 400, "invalid_param")
    store.set_feedback(message_id, rating)
    return {"result": "success"}


def _conversation(row: dict) -> dict:
    return {"id": row["id"], "name": row["name"], "inputs": row["inputs"], "status": "normal", "introduction": "",
            "created_at": int(row["created_at"]), "updated_at": int(row["updated_at"])}


@router.get("/v1/conversations")
@_guard
async def conversations(request: Request):
    from athanor.workflow.service_store import ServiceStore

    q = request.query_params
    name, _ = _resolve(request, q.get("app"), CHAT_MODES, ("not_chat_app", "/v1/conversations"))
    rows, more = ServiceStore().conversations(name, q.get("user") or "user", q.get("last_id"), _limit(request))
    return {"limit": _limit(request), "has_more": more, "data": [_conversation(r) for r in rows]}


@router.post("/v1/conversations/{conversation_id}/name")
@_guard
async def rename(request: Request, conversation_id: str):
    from athanor.workflow.service_store import ServiceStore

    body = await _json(request)
    body = body if isinstance(body, dict) else {}
    name, _ = _resolve(request, body.get("app"), CHAT_MODES, ("not_chat_app", "/v1/conversations"))
    store = ServiceStore()
    meta = _own_conversation(store, conversation_id, name, body.get("user"))
    new = str(body.get("name") or "").strip()
    if body.get("auto_generate") or not new:
        if not body.get("auto_generate"):
            raise DifyError("name is required unless auto_generate is true", 400, "invalid_param")
        first = store.messages(conversation_id, None, 100)[0]
        new = (first[0]["query"] if first else meta["name"])[:40]  # no model call: the first question
    store.rename(conversation_id, new)
    return _conversation(store.conversation_meta(conversation_id))


@router.delete("/v1/conversations/{conversation_id}")
@_guard
async def delete_conversation(request: Request, conversation_id: str):
    from athanor.workflow.service_store import ServiceStore

    body = await _json(request) if await request.body() else {}
    body = body if isinstance(body, dict) else {}
    name, _ = _resolve(request, body.get("app"), CHAT_MODES, ("not_chat_app", "/v1/conversations"))
    store = ServiceStore()
    _own_conversation(store, conversation_id, name, body.get("user"))
    store.delete_conversation(conversation_id)
    return Response(status_code=204)


@router.get("/v1/conversations/{conversation_id}/variables")
@_guard
async def conversation_variables(request: Request, conversation_id: str):
    from athanor.workflow.runs import RunStore
    from athanor.workflow.service_store import ServiceStore

    q = request.query_params
    name, app = _resolve(request, q.get("app"), CHAT_MODES, ("not_chat_app", "/v1/conversations"))
    meta = _own_conversation(ServiceStore(), conversation_id, name, q.get("user"))
    values = (RunStore().conversation(conversation_id) or {}).get("variables") or {}
    declared = {v.get("name"): v for v in app.conversation_variables if isinstance(v, dict)}
    data = [{"id": declared.get(k, {}).get("id") or k, "name": k, "value_type": declared.get(k, {}).get("value_type")
             or type(v).__name__, "value": v if isinstance(v, str) else json.dumps(v, ensure_ascii=False),
             "description": declared.get(k, {}).get("description") or "", "created_at": int(meta["created_at"]),
             "updated_at": int(meta["updated_at"])} for k, v in values.items()]
    return {"limit": 100, "has_more": False, "data": data}
