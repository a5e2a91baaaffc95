"""Liveness and readiness probes: `/health/live` (restart me?) and `/health/ready` (send me traffic?).

- live: 200 while the event loop answers and no loaded engine is stuck (pending work, no step for
  `health_stall_seconds`); 503 otherwise, so an orchestrator restarts the process. `/health` stays as it was.
- ready: 200 only when the models this replica must serve are loadable: each one resolves in the store and its
  weights are readable and look like what the manifest says (GGUF magic, or an HF dir with config.json), none of
  the loaded engines is stuck, and the replica is not draining (`app.state.draining`, set when shutdown starts).
  Which models: `ready_models` given to `install`, else $ATHANOR_READY_MODELS (comma separated), else "at least
  one model in the store is loadable".
Cheap by design (stat + 4 bytes per model, no load): probes run every few seconds.
Not for metrics (metrics.py) or for loading models (manager.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from fastapi import Request
from fastapi.responses import JSONResponse

READY_MODELS_ENV = "ATHANOR_READY_MODELS"
PROBE_PATHS = ("/health", "/health/live", "/health/ready")  # answered without an API key


def install(app, ready_models: list[str] | None = None) -> None:
    """Add the two probe routes; `ready_models` None -> $ATHANOR_READY_MODELS -> any loadable model."""
    env = [n.strip() for n in os.environ.get(READY_MODELS_ENV, "").split(",") if n.strip()]
    app.state.ready_models = list(ready_models or env)
    app.state.draining = False
    app.add_api_route("/health/live", live, methods=["GET"])
    app.add_api_route("/health/ready", ready, methods=["GET"])


def stuck_models(app) -> list[str]:
    manager, stall = app.state.manager, app.state.health_stall_seconds
    return [name for name, m in list(manager.models.items()) if m.is_stuck(stall)]


async def live(request: Request):
    stuck = stuck_models(request.app)
    body = {"status": "stuck" if stuck else "ok", "stuck_models": stuck, "time": time.time()}
    return JSONResponse(body, status_code=503 if stuck else 200)


async def ready(request: Request):
    app = request.app
    problems = readiness_problems(app)
    body = {"status": "not_ready" if problems else "ready", "problems": problems,
            "loaded_models": list(app.state.manager.models), "time": time.time()}
    return JSONResponse(body, status_code=503 if problems else 200)


def readiness_problems(app) -> list[str]:
    """Every reason this replica should not get traffic now (empty: ready)."""
    problems = []
    if getattr(app.state, "draining", False):
        problems.append("draining: shutting down")
    problems += [f"{name}: engine stuck" for name in stuck_models(app)]
    store, wanted = app.state.manager.store, app.state.ready_models
    if wanted:
        problems += [p for name in wanted if (p := model_problem(store, name))]
    elif not any(model_problem(store, m.name) is None for m in _listed(store)):
        problems.append(f"no loadable model in the store at {store.home}")
    return problems


def _listed(store) -> list:
    try:
        return store.list()
    except Exception:  # noqa: BLE001 - an unreadable store is "not ready", said by the caller
        return []


def model_problem(store, name: str) -> str | None:
    """None when `name` looks loadable, else a one-line reason."""
    try:
        manifest = store.get(name)
    except Exception as e:  # noqa: BLE001 - not found, missing weights, bad name: all "not ready"
        return f"{name}: {e}"
    return weights_problem(name, manifest.weights, manifest.format)


def weights_problem(name: str, weights: str, fmt: str) -> str | None:
    path = Path(weights)
    try:
        if fmt == "gguf":
            with open(path, "rb") as f:
                if f.read(4) != b"GGUF":
                    return f"{name}: {path} is not a GGUF file"
        elif not (path / "config.json").is_file() or not os.access(path / "config.json", os.R_OK):
            return f"{name}: {path} has no readable config.json"
    except OSError as e:
        return f"{name}: cannot read {path} ({e.strerror})"
    return None
