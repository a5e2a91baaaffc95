"""ModelRegistry: the one place a process loads models. One AsyncEngine each, loaded on first use, unloaded on expiry.

The server, the CLI, agents, workflows and RAG all get their models here (`get_registry()`), so their requests
share one engine per model (batched together) and one memory budget. In-process callers that are not async use
the sync face in handle.py, which runs the registry's coroutines on its event loop (the server's while it runs,
else a private loop thread of the registry's own).

A model is loaded (in a worker thread, so the event loop keeps serving) the first time a request names it,
kept while requests use it, and unloaded `keep_alive` seconds after its last request ends (Ollama's rule:
negative keeps it forever, 0 unloads it as soon as it is idle). At most `max_loaded_models` at once, and, with
`max_memory_bytes`, at most that many bytes of weights + KV caches (measured after each load; before a load the
size is the one measured last time, else estimated from the parameter count and the KV-cache budget): loading
another unloads least recently used idle models until it fits (503 when the rest are busy; a model larger than
the whole budget is refused). One context size per loaded model: a request whose `num_ctx` (absent: the
model's default) differs from the loaded one reloads the model when it is idle and gets 409 while others use
it, so one client's `num_ctx` never changes the context of requests already sharing the model.
Not for HTTP shapes (serve/): capacity problems are `CapacityError`s, which serve/ answers with a 503.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from athanor.engine.config import EngineConfig
from athanor.engine.model_runner import memory_bytes
from athanor.errors import AthanorError, CapacityError, ContextConflictError
from athanor.models.store import short_name
from athanor.runtime.async_engine import AsyncEngine, in_own_thread

DEFAULT_KEEP_ALIVE = 300.0  # seconds, as Ollama's default of 5 minutes
DEFAULT_MAX_LOADED_MODELS = 3  # as Ollama's OLLAMA_MAX_LOADED_MODELS default on CPU (3 x number of GPUs)
MAX_KEEP_ALIVE = 1e9  # seconds; longer means forever
_DURATION = re.compile(r"^(-?\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_keep_alive(value, default: float) -> float:
    """Ollama's keep_alive: seconds as a number, or "10s" / "5m" / "1h" / "-1"; negative -> forever (inf).
    Beyond MAX_KEEP_ALIVE (~31 years, past what a datetime can add) is forever too; NaN / inf are refused."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise AthanorError(f"keep_alive must be a duration like '5m' or a number of seconds, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value).strip())
        if not m:
            raise AthanorError(f"keep_alive must be a duration like '5m', '30s' or a number of seconds, got {value!r}")
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if not math.isfinite(seconds):
        raise AthanorError(f"keep_alive must be a finite number of seconds or a duration like '5m', got {value!r}")
    return float("inf") if seconds < 0 or seconds > MAX_KEEP_ALIVE else seconds


def parse_bytes(value: str | int | None) -> int | None:
    """A memory size: bytes as a number, or "512MiB" / "8GiB" / "8GB" / "2g"; None / "" -> no budget."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*", str(value).lower())
    if not m:
        raise AthanorError(f"memory size must look like 8GiB, 512MB or a number of bytes, got {value!r}")
    base = 1024 if m.group(3).startswith("i") or not m.group(3) else 1000
    return int(float(m.group(1)) * base ** " kmgt".index(m.group(2) or " "))


def _gib(n: int | None) -> str:
    n = n or 0
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


@dataclass
class LoadedModel:
    name: str  # full store name, e.g. "smollm2:latest"
    llm: object  # athanor.runtime.llm.LLM (its engine is stepped only by `engine`'s thread)
    engine: AsyncEngine
    load_seconds: float
    keep_alive: float
    num_ctx: int | None = None  # the context size asked for at load (None: the model's default)
    loaded_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    num_active: int = 0  # requests using it now; never unloaded while > 0
    idle_since: float = field(default_factory=time.monotonic)
    memory_bytes: int = 0  # weights + KV cache, measured after the load

    @property
    def expires_in(self) -> float:
        """Seconds until unload if nothing else comes (inf: never; while active: keep_alive from now)."""
        if self.num_active:
            return self.keep_alive
        return self.keep_alive - (time.monotonic() - self.idle_since)

    @property
    def expires_at(self) -> datetime | None:
        if self.keep_alive == float("inf"):
            return None
        return datetime.fromtimestamp(time.time() + max(0.0, self.expires_in), timezone.utc)

    @property
    def max_model_len(self) -> int:
        return self.llm.engine.max_model_len

    def is_stuck(self, stall_seconds: float) -> bool:
        """Work is pending but the engine loop has not come round for `stall_seconds`."""
        pending = self.llm.engine.has_unfinished()
        return pending and time.monotonic() - self.engine.last_step_time > stall_seconds


class ModelRegistry:
    def __init__(self, store=None, engine_config: EngineConfig | None = None, default_keep_alive: float = DEFAULT_KEEP_ALIVE,
                 max_loaded_models: int = DEFAULT_MAX_LOADED_MODELS, max_memory_bytes: int | None = None):
        assert max_loaded_models >= 1
        if store is None:
            from athanor.models.store import Store

            store = Store()
        self.store = store
        self.engine_config = engine_config or EngineConfig()
        self.default_keep_alive = default_keep_alive
        self.max_loaded_models = max_loaded_models
        self.max_memory_bytes = max_memory_bytes
        self.models: dict[str, LoadedModel] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._measured: dict[str, int] = {}  # model name -> bytes it took when last loaded
        self._manifests: dict[str, object] = {}  # name -> manifest given to `acquire` (paths, config-made models)
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop every registry coroutine runs on
        self._own_loop_lock = threading.Lock()

    # --- use -----------------------------------------------------------------------------------------------

    async def acquire(self, name: str, keep_alive=None, num_ctx: int | None = None, manifest=None) -> LoadedModel:
        """The loaded model for `name` (loading it if needed), marked in use until `release`. `manifest`: load
        that (a path or a base + adapter made by the caller) under `name` instead of the store's entry."""
        self._bind_loop()
        if manifest is not None:
            self._manifests[name] = manifest
        # store.get reads the alias file on every call: an alias ("prod") moved by `athanor promote` resolves to its
        # new target on the next request; the old target stays loaded until idle eviction
        full = name if name in self._manifests else self.store.get(name).name  # unknown -> ModelNotFoundError
        keep = parse_keep_alive(keep_alive, self.default_keep_alive)
        lock = self._locks.setdefault(full, asyncio.Lock())
        async with lock:
            model = self.models.get(full)
            if model is not None and num_ctx != model.num_ctx:
                if model.num_active:  # others are using it: their context must not change under them
                    raise ContextConflictError(
                        f"model {short_name(full)} is loaded with num_ctx {model.num_ctx or 'default'} and in use; a "
                        f"request for num_ctx {num_ctx or 'default'} must wait until it is idle (retry soon) or use "
                        "the loaded context")
                await self.unload(full)  # idle: reload with the context asked for
                model = None
            if model is None:
                await self._make_room(full, self._size_before_load(full))
                model = await in_own_thread(self._load, full, keep, num_ctx)  # no OpenMP pool left behind
                self.models[full] = model
                self._measured[full] = model.memory_bytes
                await self._fit_after_load(model)
            model.num_active += 1
            if keep_alive is not None:
                model.keep_alive = keep
        return model

    def attach_loop(self) -> None:
        """Run registry coroutines on the running loop (the server calls this when it starts)."""
        self.loop = asyncio.get_running_loop()

    def _bind_loop(self) -> None:
        """Registry coroutines run on one loop: the first running loop that uses it (the server's, or our own)."""
        if self.loop is None or not self.loop.is_running():
            self.loop = asyncio.get_running_loop()

    def call(self, coro):
        """Run a registry coroutine from sync code (another thread than the loop's) and return its result."""
        loop = self.sync_loop()
        if _running_loop() is loop:
            coro.close()
            raise RuntimeError("a sync registry call on its own event loop would deadlock; await the coroutine")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def sync_loop(self) -> asyncio.AbstractEventLoop:
        """The loop the registry runs on; with none running, a private loop thread (with the keep_alive reaper)."""
        with self._own_loop_lock:
            if self.loop is None or not self.loop.is_running():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="athanor-registry", daemon=True).start()
                asyncio.run_coroutine_threadsafe(self.reaper(), loop)
                self.loop = loop
            return self.loop

    def release(self, model: LoadedModel) -> None:
        model.num_active -= 1
        assert model.num_active >= 0, "release without acquire"
        model.idle_since = time.monotonic()

    @property
    def memory_in_use(self) -> int:
        return sum(m.memory_bytes for m in self.models.values())

    async def _make_room(self, full: str, need: int) -> None:
        """Unload least recently used idle models until one more (of `need` bytes) fits; the rest busy -> 503."""
        budget = self.max_memory_bytes
        if budget is not None and need > budget:
            raise CapacityError(f"model {full} needs about {_gib(need)} (weights + KV cache) but the memory "
                                f"budget is {_gib(budget)}; raise --max-memory or lower the KV cache",
                                code="insufficient_memory")

        def full_up() -> bool:
            return len(self.models) >= self.max_loaded_models or (
                budget is not None and self.memory_in_use + need > budget)

        while full_up():
            idle = [m for m in self.models.values() if not m.num_active]
            if not idle:
                limit = (f"max_loaded_models {self.max_loaded_models}" if len(self.models) >= self.max_loaded_models
                         else f"memory budget {_gib(budget)}, {_gib(self.memory_in_use)} in use")
                raise CapacityError(f"all {len(self.models)} loaded models are busy ({limit}); retry soon",
                                    code="overloaded", retry_after=1)
            await self.unload(min(idle, key=lambda m: m.idle_since).name)

    async def _fit_after_load(self, model: LoadedModel) -> None:
        """The estimate was low: unload other idle models (least recently used first) until the budget holds;
        a model that alone exceeds it is unloaded again and refused."""
        budget = self.max_memory_bytes
        while budget is not None and self.memory_in_use > budget:
            idle = [m for m in self.models.values() if not m.num_active and m is not model]
            if not idle:
                break  # the others are busy: they finish, then the next load makes room
            await self.unload(min(idle, key=lambda m: m.idle_since).name)
        if budget is not None and model.memory_bytes > budget:
            await self.unload(model.name)
            raise CapacityError(f"model {model.name} takes {_gib(model.memory_bytes)} (weights + KV cache) but the "
                                f"memory budget is {_gib(budget)}; raise --max-memory or lower the KV cache",
                                code="insufficient_memory")

    def _size_before_load(self, full: str) -> int:
        """Bytes the model will take: as measured on its last load, else parameters x weight bytes + KV budget."""
        if full in self._measured or self.max_memory_bytes is None:
            return self._measured.get(full, 0)
        from athanor.models.loader import inspect_weights

        params = inspect_weights(self._manifest(full).weights).get("num_parameters") or 0
        weight_bytes = 4 if self.engine_config.weight_dtype == "float32" else 2
        kv = 0 if self.engine_config.num_kvcache_blocks else self.engine_config.kv_cache_bytes  # blocks: unknown here
        return params * weight_bytes + kv

    def _load(self, full: str, keep_alive: float, num_ctx: int | None) -> LoadedModel:
        from athanor.runtime.llm import LLM

        options = {"num_ctx": num_ctx} if num_ctx else {}
        t0 = time.perf_counter()
        llm = LLM.from_manifest(self._manifest(full), dataclasses.replace(self.engine_config), options)
        llm.load_seconds = time.perf_counter() - t0
        return LoadedModel(full, llm, AsyncEngine(llm), llm.load_seconds, keep_alive, num_ctx,
                           memory_bytes=memory_bytes(llm.engine.runner.model))

    def _manifest(self, full: str):
        return self._manifests.get(full) or self.store.get(full)

    # --- unload --------------------------------------------------------------------------------------------

    async def unload(self, name: str) -> bool:
        """Unload now if loaded and idle; True when it was unloaded."""
        full = name if name in self.models or name in self._manifests else self.store.get(name).name
        model = self.models.get(full)
        if model is None or model.num_active:
            return False
        del self.models[full]
        await asyncio.to_thread(model.engine.shutdown)
        return True

    async def expire(self) -> list[str]:
        """Unload every idle model whose keep_alive has run out (called by the reaper every half second)."""
        gone = [n for n, m in self.models.items() if not m.num_active and m.expires_in <= 0]
        for name in gone:
            await self.unload(name)
        return gone

    async def reaper(self, period: float = 0.5) -> None:
        while True:
            await asyncio.sleep(period)
            await self.expire()

    def shutdown(self) -> None:
        for model in self.models.values():
            model.engine.shutdown()
        self.models.clear()

    async def unload_idle(self) -> list[str]:
        """Unload every idle model now (a registry that is no longer the process's current one)."""
        gone = [n for n, m in self.models.items() if not m.num_active]
        for name in gone:
            await self.unload(name)
        return gone

    # --- observation -------------------------------------------------------------------------------------

    def engine_gauges(self) -> list[tuple[str, str, list[tuple[str, float]]]]:
        """(metric name, help, [(model, value)]) for /metrics; read without locks (a scrape may be a step old)."""
        rows: dict[str, list] = {k: [] for k in ("waiting", "running", "used", "total", "preempted", "steps", "seconds")}
        for name, m in list(self.models.items()):
            engine = m.llm.engine
            bm = engine.block_manager
            rows["waiting"].append((name, len(engine.scheduler.waiting)))
            rows["running"].append((name, len(engine.scheduler.running)))
            rows["used"].append((name, len(bm.blocks) - bm.num_free_blocks))
            rows["total"].append((name, len(bm.blocks)))
            rows["preempted"].append((name, engine.scheduler.num_preemptions))
            rows["steps"].append((name, engine.stats.num_decode_steps))
            rows["seconds"].append((name, engine.stats.decode_seconds))
        return [
            ("athanor_queue_depth", "Requests waiting to be scheduled.", rows["waiting"]),
            ("athanor_running_sequences", "Sequences in the running batch.", rows["running"]),
            ("athanor_kv_blocks_in_use", "KV-cache blocks held by sequences.", rows["used"]),
            ("athanor_kv_blocks_total", "KV-cache blocks in the pool.", rows["total"]),
            ("athanor_preemptions", "Sequences preempted (recomputed later) since the model loaded.", rows["preempted"]),
            ("athanor_engine_decode_steps", "Engine steps that ran no prompt token, since the model loaded.", rows["steps"]),
            ("athanor_engine_decode_seconds", ("Time in those steps (model, sampling, bookkeeping; not the HTTP "
             "path): over the steps, the engine's own time per token at concurrency 1."), rows["seconds"]),
        ]

    def kv_blocks_in_use(self) -> int:
        return sum(len(m.llm.engine.block_manager.blocks) - m.llm.engine.block_manager.num_free_blocks
                   for m in self.models.values())


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


# --- the process's registry ------------------------------------------------------------------------------------

_current: list[ModelRegistry] = []  # installed by `athanor serve` / the CLI (innermost last)
_by_home: dict[str, ModelRegistry] = {}  # the default registry of each ATHANOR_HOME this process has used
_registry_lock = threading.Lock()


def get_registry() -> ModelRegistry:
    """The registry this process loads models through: the one installed (`use_registry`), else the default one for
    the current $ATHANOR_HOME (made on first use; a process that changes ATHANOR_HOME gets a fresh one and the
    previous one unloads its idle models)."""
    with _registry_lock:
        if _current:
            return _current[-1]
        from athanor.home import athanor_home
        from athanor.models.store import Store

        home = str(athanor_home())
        registry = _by_home.get(home)
        if registry is None:
            for old in _by_home.values():
                if old.loop is not None and old.loop.is_running() and _running_loop() is not old.loop:
                    asyncio.run_coroutine_threadsafe(old.unload_idle(), old.loop)
            registry = _by_home[home] = ModelRegistry(Store(home))
        return registry


class use_registry:
    """`with use_registry(r):` (or `.install()`): `get_registry()` returns `r` until the block ends."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def install(self) -> ModelRegistry:
        with _registry_lock:
            _current.append(self.registry)
        return self.registry

    def remove(self) -> None:
        with _registry_lock:
            if self.registry in _current:
                _current.remove(self.registry)

    def __enter__(self) -> ModelRegistry:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.remove()
