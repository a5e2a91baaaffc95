"""athanor on Ray Serve: N engine replicas behind one OpenAI + Ollama endpoint (`athanor serve --replicas N`).

Two deployments:
- `EngineReplica` (N of them, autoscaled on ongoing requests): each runs the very same ASGI app as
  `athanor serve` (serve/app.py: routes, auth, error shapes, /metrics, probes) in-process, with its own model
  manager and engines. A request reaches it as a dict (method, path, headers, body) and its response streams back
  as a head ({status, headers}) followed by body chunks.
- `Gateway` (the HTTP ingress, behind Ray Serve's proxy): forwards every path to a replica chosen by
  `ray_router.AffinityRouter` (conversation affinity, else least outstanding tokens). A request whose replica
  dies before the first body chunk reaches the gateway is sent again to another replica (up to `max_attempts`);
  one that already streamed cannot be replayed and ends where the replica died.
Per-replica metrics: each replica's own `/metrics` text, plus Ray Serve's built-in per-replica metrics
(`ray_serve_replica_*`, ongoing requests, latency) on Ray's metrics port; the autoscaler uses ongoing requests
(the replica's queue depth as Ray sees it). Graceful drain: on scale-down or `serve shutdown`, Ray stops routing to
a replica and waits `graceful_shutdown_timeout_s` for its in-flight requests before the lifespan shutdown runs.
Not for: the routes themselves (openai_api.py, ollama_api.py) or single-process serving (app.py).
Ray is imported only inside functions and in `build_app`, so `athanor --help` and the tests without Ray stay fast.
"""


import asyncio
import json
import logging
import os
import socket
from dataclasses import dataclass, field

from fastapi import Request  # a real class, not a string annotation: FastAPI must see it in the route signature

log = logging.getLogger("athanor.serve.ray")
ROUTER_CLASS = "athanor.serve.ray_router.AffinityRouter"
REPLICA_HEADER = "x-athanor-replica"  # names the replica that answered (for clients, logs and tests)
ATTEMPTS_HEADER = "x-athanor-attempts"  # how many replicas the gateway tried (above 1: one died before answering)
DEFAULT_MAX_TOKENS = 256  # the cost guess for a request that sets no max_tokens / num_predict


@dataclass
class ReplicaOptions:
    """What `athanor serve` would take, for every replica (plain data: it crosses process boundaries)."""

    store_home: str | None = None  # None: $ATHANOR_HOME
    api_key: str | None = None
    app_kwargs: dict = field(default_factory=dict)  # create_app's keyword arguments (engine_config, keep_alive, ...)


@dataclass
class ScaleOptions:
    """How many replicas, how they scale and how hard the gateway retries."""

    num_replicas: int = 2  # fixed count; ignored when autoscaling (min/max) is set
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_ongoing_requests: float = 4.0  # queue depth per replica the autoscaler aims at
    max_ongoing_requests: int = 64  # per replica; Ray queues beyond this in the gateway
    max_attempts: int = 3  # sends of one request when replicas die before answering
    num_cpus_per_replica: float = 1.0
    graceful_shutdown_timeout_s: float = 60.0  # drain time for in-flight streams on scale-down / shutdown

    def deployment_options(self) -> dict:
        from ray.serve.config import RequestRouterConfig

        opts = {"max_ongoing_requests": self.max_ongoing_requests,
                "graceful_shutdown_timeout_s": self.graceful_shutdown_timeout_s,
                "ray_actor_options": {"num_cpus": self.num_cpus_per_replica},
                "request_router_config": RequestRouterConfig(request_router_class=ROUTER_CLASS)}
        if self.min_replicas is not None or self.max_replicas is not None:
            lo = self.min_replicas if self.min_replicas is not None else 1
            hi = self.max_replicas if self.max_replicas is not None else max(lo, self.num_replicas)
            if not 0 <= lo <= hi:
                raise ValueError(f"replicas: need 0 <= min ({lo}) <= max ({hi})")
            opts["autoscaling_config"] = {"min_replicas": lo, "max_replicas": hi,
                                          "target_ongoing_requests": self.target_ongoing_requests}
        else:
            if self.num_replicas < 1:
                raise ValueError(f"replicas must be >= 1, got {self.num_replicas}")
            opts["num_replicas"] = self.num_replicas
        return opts


# --- routing hints (pure functions, tested without Ray) --------------------------------------------------------

def routing_hints(path: str, body: bytes) -> tuple[str | None, int]:
    """(affinity key, estimated tokens) of a request: key = model + the conversation's opening (system + first
    user message) or the prompt's first 512 characters; cost = prompt bytes / 4 + max new tokens."""
    try:
        data = json.loads(body) if body else {}
    except (ValueError, UnicodeDecodeError):
        return None, 1
    if not isinstance(data, dict):
        return None, 1
    model = str(data.get("model", ""))
    opening = _conversation_opening(data.get("messages"))
    if opening is None and isinstance(data.get("prompt"), str):
        opening = data["prompt"][:512]
    key = f"{model}\x00{opening}" if opening is not None else None
    options = data.get("options") if isinstance(data.get("options"), dict) else {}
    max_new = data.get("max_tokens") or data.get("max_completion_tokens") or options.get("num_predict")
    max_new = max_new if isinstance(max_new, int) and max_new > 0 else DEFAULT_MAX_TOKENS
    return key, len(body) // 4 + max_new


def _conversation_opening(messages) -> str | None:
    """Messages up to and including the first user turn, as JSON: the same for every turn of a conversation."""
    if not isinstance(messages, list) or not messages:
        return None
    head = []
    for m in messages:
        head.append(m)
        if isinstance(m, dict) and m.get("role") == "user":
            break
    return json.dumps(head, sort_keys=True, default=str)


# --- the replica: the single-process app, driven in-process ---------------------------------------------------

class ReplicaCore:
    """One replica's ASGI app and the plumbing to run a forwarded request through it."""

    def __init__(self, options: ReplicaOptions, replica_name: str) -> None:
        from athanor.models.store import Store
        from athanor.serve.app import create_app, resolve_api_key

        store = Store(options.store_home) if options.store_home else Store()
        self.app = create_app(store=store, api_key=resolve_api_key(options.api_key), **options.app_kwargs)
        self.replica_name = replica_name
        self._lifespan = None

    async def start(self) -> None:
        if self._lifespan is None:
            self._lifespan = self.app.router.lifespan_context(self.app)
            await self._lifespan.__aenter__()

    async def stop(self) -> None:
        if self._lifespan is not None:
            self.app.state.draining = True
            await self._lifespan.__aexit__(None, None, None)
            self._lifespan = None

    async def handle(self, req: dict):
        """Yield {"status", "headers"} then body chunks (bytes) of the app's response to `req`."""
        await self.start()
        queue: asyncio.Queue = asyncio.Queue()
        gone = asyncio.Event()  # set when our consumer stops reading: the app sees http.disconnect
        sent_body = False

        async def receive():
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": req["body"], "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def run():
            try:
                await self.app(_scope(req), receive, queue.put)
            finally:
                await queue.put(None)

        task = asyncio.create_task(run())
        try:
            while (message := await queue.get()) is not None:
                if message["type"] == "http.response.start":
                    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])]
                    yield {"status": message["status"], "headers": headers + [(REPLICA_HEADER, self.replica_name)]}
                elif message["type"] == "http.response.body" and message.get("body"):
                    yield message["body"]
        finally:
            gone.set()
            await asyncio.shield(task)


def _scope(req: dict) -> dict:
    path = req["path"]
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": req["method"], "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": req.get("query", "").encode(), "root_path": "",
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in req["headers"]],
            "client": tuple(req.get("client") or ("127.0.0.1", 0)), "server": ("127.0.0.1", 0), "state": {}}


# --- Ray deployments ----------------------------------------------------------------------------------------

def build_app(replica: ReplicaOptions | None = None, scale: ScaleOptions | None = None):
    """The Ray Serve application (Gateway bound to EngineReplica): `serve.run(build_app(...))`."""
    from ray import serve

    replica, scale = replica or ReplicaOptions(), scale or ScaleOptions()
    engine = serve.deployment(name="EngineReplica", **scale.deployment_options())(EngineReplica)
    gateway = serve.deployment(name="Gateway", num_replicas=1, max_ongoing_requests=10_000,
                               ray_actor_options={"num_cpus": 0})(_ingress(Gateway))
    return gateway.bind(engine.bind(replica), scale.max_attempts)


def _ingress(cls):
    """`cls` behind a FastAPI app with one catch-all route (Ray Serve streams FastAPI responses)."""
    from fastapi import FastAPI
    from ray import serve

    api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @serve.ingress(api)
    class Ingress(cls):
        @api.get("/-/routing")
        async def routing(self):
            """What this gateway's router knows: in-flight requests and tokens per replica."""
            from athanor.serve.ray_router import ROUTERS

            return merge_status([r.status() for r in ROUTERS])

        @api.api_route("/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
        async def forward(self, request: Request):
            return await self.forward_request(request)

    Ingress.__name__ = cls.__name__
    return Ingress


def app_from_args(args: dict):
    """`serve run athanor.serve.ray_app:app_from_args store_home=... num_replicas=2` / a Serve config file."""
    args = dict(args or {})
    replica = ReplicaOptions(store_home=args.pop("store_home", None), api_key=args.pop("api_key", None))
    fields = ScaleOptions.__dataclass_fields__
    scale = ScaleOptions(**{k: type(fields[k].default)(v) if fields[k].default is not None else int(v)
                            for k, v in args.items() if k in fields})
    unknown = set(args) - set(fields)
    if unknown:
        raise ValueError(f"unknown ray_app arguments: {', '.join(sorted(unknown))}")
    return build_app(replica, scale)


class EngineReplica:
    """A Ray Serve replica owning one athanor app (models load on first use, as in `athanor serve`)."""

    def __init__(self, options: ReplicaOptions) -> None:
        from ray import serve

        name = serve.get_replica_context().replica_id.unique_id
        self.core = ReplicaCore(options, name)

    async def __call__(self, req: dict):
        async for item in self.core.handle(req):
            yield item

    async def __del__(self):  # Ray Serve awaits an async __del__ on graceful shutdown
        await self.core.stop()


class Gateway:
    """HTTP ingress: every method and path goes to an EngineReplica; retried while nothing was streamed."""

    def __init__(self, engine, max_attempts: int = 3) -> None:
        self.engine = engine.options(stream=True)
        self.max_attempts = max_attempts

    async def forward_request(self, request: Request):
        from starlette.responses import StreamingResponse

        from athanor.serve.errors import error_response

        body = await request.body()
        key, cost = routing_hints(request.url.path, body)
        req = {"method": request.method, "path": request.url.path, "query": request.url.query,
               "headers": list(request.headers.items()), "body": body, "affinity_key": key, "cost": cost,
               "client": list(request.client) if request.client else None}
        head, first, rest, attempts = await self._send(req)
        if head is None:
            return error_response(request.url.path, "no engine replica could take the request; retry soon", 503,
                                  code="overloaded", headers={"Retry-After": "1"})
        headers = {k: v for k, v in head["headers"] if k.lower() not in ("content-length", "transfer-encoding")}
        headers[ATTEMPTS_HEADER] = str(attempts)
        return StreamingResponse(_chain(first, rest), status_code=head["status"], headers=headers,
                                 media_type=headers.get("content-type"))

    async def _send(self, req: dict):
        """(head, first chunk, the rest, attempts) from the first replica that answers; head None if none did."""
        from ray.exceptions import RayError

        for attempt in range(1, self.max_attempts + 1):
            gen = self.engine.remote(req)
            try:
                head = await gen.__anext__()
                first = await _next_or_none(gen)  # the stream counts as started once a body chunk is here
                return head, first, gen, attempt
            except RayError as e:  # the replica died or became unreachable before answering: send it again
                log.warning("replica failed before answering (attempt %d/%d): %s", attempt, self.max_attempts,
                            type(e).__name__)
        return None, None, None, self.max_attempts


def merge_status(statuses: list[dict]) -> dict:
    """One view over the routers of this process (usually one per handle)."""
    replicas: dict[str, dict] = {}
    for status in statuses:
        for rid, row in status["replicas"].items():
            into = replicas.setdefault(rid, {"outstanding_tokens": 0, "requests": 0})
            into["outstanding_tokens"] += row["outstanding_tokens"]
            into["requests"] += row["requests"]
    return {"replicas": replicas, "conversations": sum(s["conversations"] for s in statuses)}


async def _next_or_none(gen):
    try:
        return await gen.__anext__()
    except StopAsyncIteration:
        return None


async def _chain(first, rest):
    from ray.exceptions import RayError

    if first is not None:
        yield first
        try:
            async for chunk in rest:
                yield chunk
        except RayError as e:  # died mid-stream: the client sees the stream end early
            log.warning("replica died mid-stream: %s", type(e).__name__)


# --- the CLI entry ------------------------------------------------------------------------------------------

def run_replicas(num_replicas: int, host: str, port: int, api_key: str | None = None, log_level: str = "info",
                 **app_kwargs) -> None:
    """`athanor serve --replicas N`: a local Ray cluster, Serve's proxy on host:port, N replicas; blocks."""
    import ray
    from ray import serve

    from athanor.serve.app import resolve_api_key

    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), format="%(message)s")
    ray.init(num_cpus=max(os.cpu_count() or 1, num_replicas + 1), include_dashboard=False,
             ignore_reinit_error=True)
    serve.start(http_options={"host": host, "port": port})
    options = ReplicaOptions(api_key=resolve_api_key(api_key), app_kwargs=app_kwargs)
    scale = ScaleOptions(num_replicas=num_replicas, num_cpus_per_replica=1.0)
    serve.run(build_app(options, scale), blocking=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
