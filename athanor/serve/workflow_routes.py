"""HTTP routes for Dify apps, a FastAPI `router` for `athanor serve` to include: the service API
(dify_api.py, dify_info.py: chat / completion / workflow runs, files, parameters, messages,
conversations, all by app key) plus these two of our own, and the helpers they share:

    GET  /v1/workflows/run/{id}   a persisted run (with every node execution)
    GET  /v1/workflows/apps       the installed apps (our addition)
    POST /v1/files/upload         multipart `file` (+ `user`): Dify's upload record; runs name it by upload_file_id

Apps are Dify DSL files in `$ATHANOR_HOME/workflows/apps/NAME.yml` (`athanor workflow import` puts them there
and makes their keys). Models: `$ATHANOR_HOME/workflows/model_map.yml` when present, and
`$ATHANOR_WORKFLOW_MODEL` as the default; tool and knowledge bindings: `$ATHANOR_HOME/workflows/bindings.yml`.
Errors use Dify's shape `{"code", "message", "status"}`. Not for: graph semantics (engine.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from athanor.errors import AthanorError

router = APIRouter(tags=["workflows"])
MODEL_CACHE: dict = {}  # model spec -> loaded ChatModel, shared by every request (each model loads once)


class DifyError(Exception):
    def __init__(self, message: str, status: int = 400, code: str = "invalid_param"):
        super().__init__(message)
        self.message, self.status, self.code = message, status, code


def _error(e: DifyError) -> JSONResponse:
    from athanor.serve.errors import dify_error_body

    return JSONResponse(dify_error_body(e.message, e.status, e.code), status_code=e.status)


def _home() -> Path:
    from athanor.home import athanor_home

    return athanor_home() / "workflows"


def apps_dir() -> Path:
    from athanor.workflow.service_store import apps_dir as installed_apps

    return installed_apps()


def _services():
    from athanor.workflow.services import Services

    model_map, bindings = _home() / "model_map.yml", _home() / "bindings.yml"
    services = Services.from_options(os.environ.get("ATHANOR_WORKFLOW_MODEL") or None,
                                     str(model_map) if model_map.is_file() else None, MODEL_CACHE,
                                     bindings_file=str(bindings) if bindings.is_file() else None)
    services.allow_local_files = False  # a request never names a file on this machine: uploads and URLs only
    services.file_url_hosts = {h.strip() for h in os.environ.get("ATHANOR_WORKFLOW_FILE_HOSTS", "").split(",")
                               if h.strip()}
    services.unsafe_code = os.environ.get("ATHANOR_UNSAFE_CODE", "") == "1"  # `athanor serve --unsafe-code`
    return services



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


from athanor.serve import dify_api as service_api

router.include_router(service_api.router)
