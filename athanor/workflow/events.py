"""Dify's streaming events, as plain dicts in the shapes Dify's API sends (`data: {...}` SSE lines).

Envelope: `{"event", "task_id", "workflow_run_id", "data": {...}}`; advanced-chat runs add `conversation_id`,
`message_id` and `created_at`. `message` / `message_end` (advanced-chat) and `text_chunk` (workflow) carry
answer text. Timestamps are integer seconds, `elapsed_time` float seconds, as in Dify.
Not for: deciding when events happen (engine.py) or sending them (cli.py, routes.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

WORKFLOW_STARTED, WORKFLOW_FINISHED = "workflow_started", "workflow_finished"
NODE_STARTED, NODE_FINISHED, NODE_RETRY = "node_started", "node_finished", "node_retry"
TEXT_CHUNK, MESSAGE, MESSAGE_END = "text_chunk", "message", "message_end"
ITERATION_STARTED, ITERATION_NEXT, ITERATION_COMPLETED = "iteration_started", "iteration_next", "iteration_completed"
LOOP_STARTED, LOOP_NEXT, LOOP_COMPLETED = "loop_started", "loop_next", "loop_completed"


def now_s() -> int:
    return int(time.time())


@dataclass
class RunIds:
    """The ids every event of one run carries."""

    run_id: str
    task_id: str
    workflow_id: str
    mode: str = "workflow"
    conversation_id: str | None = None
    message_id: str | None = None
    created_at: int = field(default_factory=now_s)

    def envelope(self, event: str, data: dict | None = None, **extra) -> dict:
        out = {"event": event, "task_id": self.task_id, "workflow_run_id": self.run_id}
        if self.mode == "advanced-chat":
            out.update(conversation_id=self.conversation_id, message_id=self.message_id, created_at=self.created_at)
        out.update(extra)
        if data is not None:
            out["data"] = data
        return out


def workflow_started(ids: RunIds, inputs: dict) -> dict:
    return ids.envelope(WORKFLOW_STARTED, {"id": ids.run_id, "workflow_id": ids.workflow_id, "sequence_number": 1,
                                           "inputs": inputs, "created_at": ids.created_at})


def workflow_finished(ids: RunIds, status: str, outputs: dict | None, error: str | None, elapsed: float,
                      total_tokens: int, total_steps: int, exceptions_count: int) -> dict:
    return ids.envelope(WORKFLOW_FINISHED, {
        "id": ids.run_id, "workflow_id": ids.workflow_id, "sequence_number": 1, "status": status,
        "outputs": outputs, "error": error, "elapsed_time": elapsed, "total_tokens": total_tokens,
        "total_steps": total_steps, "created_by": {}, "created_at": ids.created_at, "finished_at": now_s(),
        "exceptions_count": exceptions_count, "files": []})


def node_started(ids: RunIds, info: dict) -> dict:
    keys = ("id", "node_id", "node_type", "title", "index", "predecessor_node_id", "inputs", "created_at",
            "extras", "iteration_id", "loop_id", "parallel_run_id")
    return ids.envelope(NODE_STARTED, {k: info.get(k) for k in keys})


def node_finished(ids: RunIds, info: dict) -> dict:
    keys = ("id", "node_id", "node_type", "title", "index", "predecessor_node_id", "inputs", "process_data",
            "outputs", "status", "error", "elapsed_time", "execution_metadata", "created_at", "finished_at",
            "iteration_id", "loop_id", "parallel_run_id")
    data = {k: info.get(k) for k in keys}
    data["files"] = []
    return ids.envelope(NODE_FINISHED, data)


def node_retry(ids: RunIds, info: dict, retry_index: int, error: str) -> dict:
    data = {k: info.get(k) for k in ("id", "node_id", "node_type", "title", "index", "created_at")}
    data.update(retry_index=retry_index, error=error)
    return ids.envelope(NODE_RETRY, data)


def text(ids: RunIds, chunk: str, selector: list | None) -> dict:
    """An answer chunk: `message` in advanced-chat apps, `text_chunk` in workflow apps."""
    if ids.mode == "advanced-chat":
        return ids.envelope(MESSAGE, None, id=ids.message_id, answer=chunk)
    return ids.envelope(TEXT_CHUNK, {"text": chunk, "from_variable_selector": selector})


def message_end(ids: RunIds, total_tokens: int) -> dict:
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": total_tokens}
    return ids.envelope(MESSAGE_END, None, id=ids.message_id, metadata={"usage": usage})


def container(ids: RunIds, kind: str, phase: str, node, **fields) -> dict:
    """iteration_* / loop_* events: kind "iteration" or "loop", phase "started" | "next" | "completed"."""
    data = {"id": fields.pop("execution_id", node.id), "node_id": node.id, "node_type": node.type,
            "title": node.title, "created_at": now_s(), "extras": {}}
    data.update(fields)
    return ids.envelope(f"{kind}_{phase}", data)
