"""The server: `create_app(...)` builds the FastAPI app (both APIs, /health, /metrics), `serve(...)` runs it.

Default port 11435: one above Ollama's 11434, so athanor and Ollama can run side by side; point Ollama
clients at http://127.0.0.1:11435 (OLLAMA_HOST) and OpenAI clients at http://127.0.0.1:11435/v1.
While it runs, the app's registry is the process's (`get_registry()`): workflows, agents and RAG answering inside
the server load and batch their models with HTTP traffic, under the same --max-memory.
Not for the routes themselves (openai_api.py, ollama_api.py, ollama_models.py) or model lifetimes (runtime/registry.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from athanor.engine.config import EngineConfig
from athanor.ops.tracing_setup import TraceSettings, start_tracing
from athanor.runtime.registry import DEFAULT_KEEP_ALIVE, DEFAULT_MAX_LOADED_MODELS, ModelRegistry, use_registry
from athanor.serve.errors import install_error_handlers
from athanor.serve.guards import DEFAULT_MAX_BODY_BYTES, GuardMiddleware
from athanor.serve.metrics import Metrics
from athanor.serve.middleware import RequestMiddleware
from athanor.serve.openapi_doc import install_openapi

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11435
API_KEY_ENV = "ATHANOR_API_KEY"
HEALTH_STALL_SECONDS = 30.0  # a step longer than this with work pending means the engine loop is stuck
MAX_PENDING = 256  # requests in flight per model (running + queued) before new ones get 503 + Retry-After


def create_app(store=None, engine_config: EngineConfig | None = None, api_key: str | None = None,
               keep_alive: float = DEFAULT_KEEP_ALIVE, health_stall_seconds: float = HEALTH_STALL_SECONDS,
               max_pending: int = MAX_PENDING, max_loaded_models: int = DEFAULT_MAX_LOADED_MODELS,
               max_memory_bytes: int | None = None, ready_models: list[str] | None = None,
               bind_host: str = DEFAULT_HOST, allowed_hosts: list[str] | None = None, origins: list[str] | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, trace: TraceSettings | None = None) -> FastAPI:
    """The app. `store`: a models.store.Store (default: $ATHANOR_HOME's); `api_key`: None -> no auth;
    `keep_alive`: default seconds a model stays loaded after its last request; `max_pending`: per model;
    `max_memory_bytes`: weights + KV caches of all loaded models (None: only `max_loaded_models` limits);
    `ready_models`: the models /health/ready requires to be loadable (see health.py);
    `bind_host`, `allowed_hosts`, `origins`, `max_body_bytes`: the browser and size guards (guards.py);
    `trace`: where and how calls are traced (default: every model call, in $ATHANOR_HOME/traces.sqlite)."""
    from athanor.models.store import Store
    from athanor.serve import anthropic_api, ollama_api, ollama_models, openai_api, tokenizer_info, trace_routes
    from athanor.serve import health as probes
    from athanor.serve.ui import routes as ui_routes

    manager = ModelRegistry(store or Store(), engine_config, keep_alive, max_loaded_models, max_memory_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        manager.attach_loop()
        app.state.tracing = start_tracing(trace)  # spans from routes, agents, workflows, RAG (ops/)
        installed = use_registry(manager)
        installed.install()
        reaper = asyncio.create_task(manager.reaper())
        try:
            yield
        finally:
            app.state.draining = True  # /health/ready says no from here on
            installed.remove()
            reaper.cancel()
            await asyncio.to_thread(manager.shutdown)
            if app.state.tracing is not None:
                await asyncio.to_thread(app.state.tracing.stop)

    app = FastAPI(title="athanor", lifespan=lifespan)
    app.state.manager, app.state.metrics, app.state.tracing = manager, Metrics(), None
    app.state.health_stall_seconds, app.state.max_pending = health_stall_seconds, max_pending
    install_error_handlers(app)
    install_openapi(app)
    from athanor.serve import kb_routes as kb_routes  # knowledge-base routes (issue 7); heavy parts load on use
    from athanor.serve import (
        workflow_routes as workflow_routes,  # Dify-shaped workflow routes (issue 6); engine loads on use
    )

    for module in (openai_api, tokenizer_info, anthropic_api, ollama_api, ollama_models, kb_routes, workflow_routes):
        app.include_router(module.router)
    app.include_router(trace_routes.router)  # GET /v1/traces, /v1/traces/{id}, POST /v1/feedback
    from athanor.serve import eval_routes  # eval runs for the console (issue 18)

    app.include_router(eval_routes.router)
    app.include_router(eval_routes.promote_router)  # POST /v1/promote (the console's Promote)
    from athanor.serve import train_jobs  # fine-tuning jobs over HTTP (issue 19): `athanor train` in child processes
    app.include_router(train_jobs.router)
    app.include_router(ui_routes.router)  # the console (/ui): pages without the key, data through the API
    app.state.auth_required = api_key is not None  # the console's pages ask for the key only then
    from athanor.serve import dataset_routes  # POST /v1/traces/export (issue 18)

    app.include_router(dataset_routes.router)
    from athanor.serve import ollama_blobs, responses_api  # /v1/responses, /api/blobs (issue 17)

    app.include_router(responses_api.router)
    app.include_router(ollama_blobs.router)
    app.add_api_route("/health", health, methods=["GET"])
    probes.install(app, ready_models)  # /health/live, /health/ready
    app.add_api_route("/metrics", metrics, methods=["GET"])
    app.add_api_route("/", root, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_middleware(RequestMiddleware, api_key=api_key, metrics=app.state.metrics,
                       key_check=workflow_routes.service_api.accepts_app_key)  # Dify app keys open their app only
    app.add_middleware(GuardMiddleware, bind_host=bind_host, allowed_hosts=allowed_hosts, origins=origins,
                       max_body_bytes=max_body_bytes)  # added last: runs first
    return app


async def health(request: Request):
    """200 while every loaded engine loop is alive; 503 when one has pending work but stopped stepping."""
    manager, stall = request.app.state.manager, request.app.state.health_stall_seconds
    stuck = [name for name, m in list(manager.models.items()) if m.is_stuck(stall)]
    body = {"status": "stuck" if stuck else "ok", "stuck_models": stuck, "loaded_models": list(manager.models),
            "time": time.time()}
    return JSONResponse(body, status_code=503 if stuck else 200)


async def metrics(request: Request):
    text = request.app.state.metrics.render(request.app.state.manager)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


async def root():
    return PlainTextResponse("athanor is running")  # Ollama clients probe GET / for this


def resolve_api_key(api_key: str | None, api_key_file: str | None = None) -> str | None:
    """The key given, else the first line of `api_key_file`, else $ATHANOR_API_KEY, else None (no auth).
    A file or the environment keeps the key off the command line (where `ps` and /proc show it)."""
    if api_key:
        return api_key
    if api_key_file:
        try:
            with open(api_key_file, encoding="utf-8") as f:
                key = f.readline().strip()
        except OSError as e:
            raise ValueError(f"cannot read the API key file {api_key_file}: {e.strerror}") from None
        if not key:
            raise ValueError(f"the API key file {api_key_file} is empty")
        return key
    return os.environ.get(API_KEY_ENV) or None


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, api_key: str | None = None,
          keep_alive: float = DEFAULT_KEEP_ALIVE, engine_config: EngineConfig | None = None,
          max_pending: int = MAX_PENDING, max_loaded_models: int = DEFAULT_MAX_LOADED_MODELS,
          max_memory_bytes: int | None = None, log_level: str = "info", ready_models: list[str] | None = None,
          api_key_file: str | None = None, allowed_hosts: list[str] | None = None, origins: list[str] | None = None,
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, trace: TraceSettings | None = None) -> None:
    """Run the server until interrupted. `api_key` None -> `api_key_file`, else $ATHANOR_API_KEY, else no auth.
    `trace`: tracing settings (None: on, content captured, $ATHANOR_HOME/traces.sqlite)."""
    import uvicorn

    api_key = resolve_api_key(api_key, api_key_file)
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), format="%(message)s")
    app = create_app(engine_config=engine_config, api_key=api_key, keep_alive=keep_alive, max_pending=max_pending,
                     max_loaded_models=max_loaded_models, max_memory_bytes=max_memory_bytes, ready_models=ready_models,
                     bind_host=host, allowed_hosts=allowed_hosts, origins=origins, max_body_bytes=max_body_bytes,
                     trace=trace)
    signal.signal(signal.SIGTERM, _exit_clean)  # uvicorn drains, then re-raises the SIGTERM it caught: exit 0
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)  # our middleware logs access


def _exit_clean(signum, frame) -> None:
    """SIGTERM after uvicorn's graceful drain (it restores this handler, then re-sends the signal)."""
    raise SystemExit(0)
