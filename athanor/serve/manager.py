"""ModelManager: the models a server has loaded, one AsyncEngine each, loaded on first use, unloaded on expiry.

A model is loaded (in a worker thread, so the event loop keeps serving) the first time a request names it,
kept while requests use it, and unloaded `keep_alive` seconds after its last request ends (Ollama's rule:
negative keeps it forever, 0 unloads it as soon as it is idle). At most `max_loaded_models` at once, and, with
`max_memory_bytes`, at most that many bytes of weights + KV caches (measured after each load; before a load the
size is the one measured last time, else estimated from the parameter count and the KV-cache budget): loading
another unloads least recently used idle models until it fits (503 when the rest are busy; a model larger than
the whole budget is refused). One context size per loaded model: a request whose `num_ctx` (absent: the
model's default) differs from the loaded one reloads the model when it is idle and gets 409 while others use
it, so one client's `num_ctx` never changes the context of requests already sharing the model.
Not for HTTP shapes (openai_api.py, ollama_api.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from athanor.engine.async_engine import AsyncEngine
from athanor.engine.config import EngineConfig
from athanor.engine.model_runner import memory_bytes
from athanor.errors import AthanorError
from athanor.models.store import short_name
from athanor.serve.errors import ServeError

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
    llm: object  # athanor.engine.llm.LLM
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


class ModelManager:
    def __init__(self, store, engine_config: EngineConfig | None = None, default_keep_alive: float = DEFAULT_KEEP_ALIVE,
                 max_loaded_models: int = DEFAULT_MAX_LOADED_MODELS, max_memory_bytes: int | None = None):
        assert max_loaded_models >= 1
        self.store = store
        self.engine_config = engine_config or EngineConfig()
        self.default_keep_alive = default_keep_alive
        self.max_loaded_models = max_loaded_models
        self.max_memory_bytes = max_memory_bytes
        self.models: dict[str, LoadedModel] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._measured: dict[str, int] = {}  # model name -> bytes it took when last loaded

    # --- use -----------------------------------------------------------------------------------------------

    async def acquire(self, name: str, keep_alive=None, num_ctx: int | None = None) -> LoadedModel:
        """The loaded model for `name` (loading it if needed), marked in use until `release`."""
        full = self.store.get(name).name  # unknown -> ModelNotFoundError (404)
        keep = parse_keep_alive(keep_alive, self.default_keep_alive)
        lock = self._locks.setdefault(full, asyncio.Lock())
        async with lock:
            model = self.models.get(full)
            if model is not None and num_ctx != model.num_ctx:
                if model.num_active:  # others are using it: their context must not change under them
                    raise ServeError(f"model {short_name(full)} is loaded with num_ctx {model.num_ctx or 'default'} "
                                     f"and in use; a request for num_ctx {num_ctx or 'default'} must wait until it "
                                     "is idle (retry soon) or use the loaded context", 409, "num_ctx",
                                     "context_conflict", headers={"Retry-After": "1"})
                await self.unload(full)  # idle: reload with the context asked for
                model = None
            if model is None:
                await self._make_room(full, self._size_before_load(full))
                model = await asyncio.to_thread(self._load, full, keep, num_ctx)
                self.models[full] = model
                self._measured[full] = model.memory_bytes
                await self._fit_after_load(model)
            model.num_active += 1
            if keep_alive is not None:
                model.keep_alive = keep
        return model

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
            raise ServeError(f"model {full} needs about {_gib(need)} (weights + KV cache) but the server's memory "
                             f"budget is {_gib(budget)}; raise --max-memory or lower the KV cache", 503,
                             code="insufficient_memory")

        def full_up() -> bool:
            return len(self.models) >= self.max_loaded_models or (
                budget is not None and self.memory_in_use + need > budget)

        while full_up():
            idle = [m for m in self.models.values() if not m.num_active]
            if not idle:
                limit = (f"max_loaded_models {self.max_loaded_models}" if len(self.models) >= self.max_loaded_models
                         else f"memory budget {_gib(budget)}, {_gib(self.memory_in_use)} in use")
                raise ServeError(f"all {len(self.models)} loaded models are busy ({limit}); retry soon", 503,
                                 code="overloaded", headers={"Retry-After": "1"})
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
            raise ServeError(f"model {model.name} takes {_gib(model.memory_bytes)} (weights + KV cache) but the "
                             f"server's memory budget is {_gib(budget)}; raise --max-memory or lower the KV cache",
                             503, code="insufficient_memory")

    def _size_before_load(self, full: str) -> int:
        """Bytes the model will take: as measured on its last load, else parameters x weight bytes + KV budget."""
        if full in self._measured or self.max_memory_bytes is None:
            return self._measured.get(full, 0)
        from athanor.models.loader import inspect_weights

        params = inspect_weights(self.store.get(full).weights).get("num_parameters") or 0
        weight_bytes = 4 if self.engine_config.weight_dtype == "float32" else 2
        kv = 0 if self.engine_config.num_kvcache_blocks else self.engine_config.kv_cache_bytes  # blocks: unknown here
        return params * weight_bytes + kv

    def _load(self, full: str, keep_alive: float, num_ctx: int | None) -> LoadedModel:
        from athanor.engine.llm import LLM

        options = {"num_ctx": num_ctx} if num_ctx else {}
        t0 = time.perf_counter()
        llm = LLM.from_manifest(self.store.get(full), dataclasses.replace(self.engine_config), options)
        llm.load_seconds = time.perf_counter() - t0
        return LoadedModel(full, llm, AsyncEngine(llm), llm.load_seconds, keep_alive, num_ctx,
                           memory_bytes=memory_bytes(llm.engine.runner.model))

    # --- unload --------------------------------------------------------------------------------------------

    async def unload(self, name: str) -> bool:
        """Unload now if loaded and idle; True when it was unloaded."""
        full = self.store.get(name).name if name not in self.models else name
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

    # --- observation -------------------------------------------------------------------------------------

    def engine_gauges(self) -> list[tuple[str, str, list[tuple[str, float]]]]:
        """(metric name, help, [(model, value)]) for /metrics; read without locks (a scrape may be a step old)."""
        rows: dict[str, list] = {k: [] for k in ("waiting", "running", "used", "total", "preempted")}
        for name, m in list(self.models.items()):
            engine = m.llm.engine
            bm = engine.block_manager
            rows["waiting"].append((name, len(engine.scheduler.waiting)))
            rows["running"].append((name, len(engine.scheduler.running)))
            rows["used"].append((name, len(bm.blocks) - bm.num_free_blocks))
            rows["total"].append((name, len(bm.blocks)))
            rows["preempted"].append((name, engine.scheduler.num_preemptions))
        return [
            ("athanor_queue_depth", "Requests waiting to be scheduled.", rows["waiting"]),
            ("athanor_running_sequences", "Sequences in the running batch.", rows["running"]),
            ("athanor_kv_blocks_in_use", "KV-cache blocks held by sequences.", rows["used"]),
            ("athanor_kv_blocks_total", "KV-cache blocks in the pool.", rows["total"]),
            ("athanor_preemptions", "Sequences preempted (recomputed later) since the model loaded.", rows["preempted"]),
        ]

    def kv_blocks_in_use(self) -> int:
        return sum(len(m.llm.engine.block_manager.blocks) - m.llm.engine.block_manager.num_free_blocks
                   for m in self.models.values())
