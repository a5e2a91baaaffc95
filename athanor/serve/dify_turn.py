"""One service-API request's run: ids, Services, the engine in a thread, and the engine's events translated
into what each Dify app mode's clients get (workflow events; message / message_end; agent_thought /
agent_message; error). `TASKS` maps running task ids to their stop flags for the stop routes.
Not for: routes (dify_api.py) or graph semantics (engine.py).
"""

from __future__ import annotations

import contextvars
import json
import queue
import threading
import time
import uuid

from athanor.errors import AthanorError
from athanor.serve import workflow_routes as routes

TASKS: dict[str, tuple[str, threading.Event]] = {}  # task id -> (app name, the run's stop flag)
_END = object()


class Turn:
    """One request's run: ids, services, the engine thread, events translated for the app's mode."""

    def __init__(self, name: str, app, user: str, query: str = "", conversation_id: str | None = None):
        self.name, self.app, self.user, self.query = name, app, user, query
        self.task_id, self.message_id = str(uuid.uuid4()), str(uuid.uuid4())
        self.services = routes._services()
        from athanor.workflow.service_store import uploads_dir

        self.services.upload_root = str(uploads_dir())
        self.conversation_id = conversation_id
        self.created_at = int(time.time())
        self.position = 0

    def translate(self, event: dict) -> list[dict]:
        """An engine event -> what this app mode's clients get (Dify's shapes)."""
        e, kind, mode = dict(event), event.get("event"), self.app.mode
        e["task_id"] = self.task_id
        if mode in ("workflow", "advanced-chat"):
            if "message_id" in e:
                self.message_id = e["message_id"] or self.message_id
            return [e]
        head = {"task_id": self.task_id, "id": self.message_id, "message_id": self.message_id,
                "created_at": self.created_at}
        if mode != "completion":
            self.conversation_id = e.get("conversation_id") or self.conversation_id
            head["conversation_id"] = self.conversation_id
        if kind == "text_chunk":  # completion apps run as workflows: the end node's text is the answer
            return [{"event": "message", **head, "answer": e["data"]["text"]}]
        if kind == "message":
            return [{"event": "agent_message" if mode == "agent-chat" else "message", **head, "answer": e["answer"]}]
        if kind == "agent_log":  # one agent step (agent/react.py AgentEvent kinds) -> Dify's agent_thought
            data = e.get("data") or {}
            label, inner = data.get("label"), data.get("data") or {}
            if label in ("answer", "stopped"):
                return []  # the answer goes out as agent_message
            self.position += 1
            text = inner.get("text") or ""
            return [{"event": "agent_thought", "id": str(uuid.uuid4()), "task_id": self.task_id,
                     "message_id": self.message_id, "position": self.position,
                     "thought": text if label == "thought" else "",
                     "observation": text if label in ("tool_result", "error") else "",
                     "tool": inner.get("tool") or "",
                     "tool_input": json.dumps(inner.get("arguments") or {}) if label == "tool_call" else "",
                     "created_at": int(time.time()), "message_files": [], "conversation_id": self.conversation_id}]
        if kind == "message_end" or (kind == "workflow_finished" and mode == "completion"):
            data = e.get("data") or {}
            if kind == "workflow_finished" and data.get("status") == "failed":
                return [self.error_event(data.get("error") or "the run failed")]
            usage = (e.get("metadata") or {}).get("usage") or {"prompt_tokens": 0, "completion_tokens": 0,
                                                               "total_tokens": data.get("total_tokens") or 0}
            return [{"event": "message_end", **head, "metadata": {"usage": usage, "retriever_resources": []}}]
        if kind == "workflow_finished" and (e.get("data") or {}).get("status") == "failed":
            return [self.error_event(e["data"].get("error") or "the run failed")]
        return []

    def error_event(self, message: str) -> dict:
        out = {"event": "error", "task_id": self.task_id, "message_id": self.message_id, "status": 400,
               "code": "completion_request_error", "message": message}
        if self.app.mode != "completion":
            out["conversation_id"] = self.conversation_id
        return out

    def start(self, run_kwargs: dict, stream: bool, on_done=None):
        """Blocking: the RunResult. Streaming: an iterator of SSE lines (the run goes on in a thread)."""
        from athanor.workflow.engine import WorkflowEngine
        from athanor.workflow.runs import RunStore

        store, events, held = RunStore(), queue.Queue(), []
        TASKS[self.task_id] = (self.name, self.services.stop)

        def to_client(event: dict) -> None:
            last = event.get("event") in ("workflow_finished", "message_end")
            for out in self.translate(event):
                # the last events wait until the turn is saved: a client that sees them may send the next turn
                if last:
                    held.append(out)
                else:
                    events.put(out)

        observers = [store.observer(self.app, self.user)] + ([to_client] if stream else [])
        engine = WorkflowEngine(self.app, self.services, observers)

        def finish():
            try:
                result = engine.run(**run_kwargs, user=self.user)
            finally:
                self.services.close()
                TASKS.pop(self.task_id, None)
            if on_done:
                on_done(store, result)
            return result

        if not stream:
            return finish()

        def work():
            try:
                finish()
            except AthanorError as e:
                events.put({"event": "error", "task_id": self.task_id, "status": 400, "code": "invalid_param",
                            "message": str(e)})
            finally:
                for event in held:
                    events.put(event)
                events.put(_END)

        # the run keeps the HTTP request's context: its model calls carry the request id (runtime/request_id.py)
        threading.Thread(target=contextvars.copy_context().run, args=(work,), daemon=True, name="dify-run").start()

        def lines():
            try:
                while (event := events.get()) is not _END:
                    yield f"data: {json.dumps(event, ensure_ascii=False, default=str)}\n\n"
            finally:
                self.services.stop.set()  # the client went away (or the run is over): stop what is left

        return lines()
