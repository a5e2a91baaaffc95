"""ModelRegistry and keep_alive parsing: load on first use, one engine per model, expiry only when idle."""

from __future__ import annotations

import asyncio

import pytest

from athanor.engine.config import EngineConfig
from athanor.errors import AthanorError, CapacityError, ModelNotFoundError
from athanor.models.store import Store
from athanor.runtime.registry import ModelRegistry, parse_bytes, parse_keep_alive
from athanor.serve.errors import to_serve_error


@pytest.mark.parametrize("value,seconds", [(None, 300.0), ("", 300.0), (10, 10.0), (0, 0.0), ("0", 0.0),
                                           ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("250ms", 0.25),
                                           (-1, float("inf")), ("-1m", float("inf")), (1.5, 1.5)])
def test_parse_keep_alive(value, seconds):
    assert parse_keep_alive(value, 300.0) == seconds


@pytest.mark.parametrize("value", ["soon", "5 minutes", True, "1d"])
def test_parse_keep_alive_rejects(value):
    with pytest.raises(AthanorError, match="keep_alive"):
        parse_keep_alive(value, 300.0)


def tiny_store(tmp_path, tiny_hf_dir, names=("tiny",)) -> Store:
    store = Store(tmp_path)
    (tmp_path / "Modelfile").write_text(f"FROM {tiny_hf_dir}\n")
    for name in names:
        store.create(name, tmp_path / "Modelfile")
    return store


def test_registry_loads_once_and_expires_only_when_idle(tmp_path, tiny_hf_dir):
    store = tiny_store(tmp_path, tiny_hf_dir)
    manager = ModelRegistry(store, EngineConfig(num_kvcache_blocks=32, block_size=8), default_keep_alive=0.0)

    async def main():
        a, b = await asyncio.gather(manager.acquire("tiny"), manager.acquire("tiny:latest"))
        assert a is b and a.num_active == 2 and list(manager.models) == ["tiny:latest"]
        assert await manager.expire() == []  # in use: never unloaded
        manager.release(a)
        manager.release(b)
        assert await manager.expire() == ["tiny:latest"] and not manager.models
        with pytest.raises(ModelNotFoundError):
            await manager.acquire("missing")
        kept = await manager.acquire("tiny", keep_alive=-1)
        manager.release(kept)
        assert kept.expires_at is None and await manager.expire() == []
        gauges = {name: rows for name, _, rows in manager.engine_gauges()}
        assert gauges["athanor_kv_blocks_total"] == [("tiny:latest", 32)]
        assert gauges["athanor_kv_blocks_in_use"] == [("tiny:latest", 0)]
        assert gauges["athanor_preemptions"] == [("tiny:latest", kept.llm.engine.scheduler.num_preemptions)] == [("tiny:latest", 0)]
        manager.shutdown()

    asyncio.run(main())


def test_lru_unload_when_full_and_num_ctx_reload(tmp_path, tiny_hf_dir):
    store = tiny_store(tmp_path, tiny_hf_dir, names=("a", "b"))
    manager = ModelRegistry(store, EngineConfig(num_kvcache_blocks=64, block_size=8), max_loaded_models=1)

    async def main():
        a = await manager.acquire("a", num_ctx=128)
        assert a.max_model_len == 128
        with pytest.raises(CapacityError) as e:  # the only slot is busy
            await manager.acquire("b")
        http = to_serve_error(e.value)  # serve/ answers a CapacityError with a 503
        assert http.status == 503 and http.headers == {"Retry-After": "1"}
        manager.release(a)
        b = await manager.acquire("b")  # a is idle: unloaded to make room
        assert list(manager.models) == ["b:latest"]
        manager.release(b)
        bigger = await manager.acquire("b", num_ctx=256)  # another context size: reloaded
        assert bigger is not b and bigger.max_model_len == 256
        manager.release(bigger)
        manager.shutdown()

    asyncio.run(main())


@pytest.mark.parametrize("value,size", [(None, None), ("", None), (1000, 1000), ("1000", 1000), ("2KiB", 2048),
                                        ("512MB", 512_000_000), ("8GiB", 8 * 2**30), ("1.5g", int(1.5 * 2**30))])
def test_parse_bytes(value, size):
    assert parse_bytes(value) == size


def test_parse_bytes_rejects():
    with pytest.raises(AthanorError, match="memory size"):
        parse_bytes("lots")


def test_memory_budget_unloads_least_recently_used(tmp_path, tiny_hf_dir):
    """Three models, a budget for two: a third load unloads the least recently used idle one; a budget smaller
    than one model refuses it with the sizes in the message; busy models are never unloaded."""
    store = tiny_store(tmp_path, tiny_hf_dir, names=("a", "b", "c"))
    config = EngineConfig(num_kvcache_blocks=64, block_size=8)
    probe = ModelRegistry(store, config)

    async def main():
        a = await probe.acquire("a")
        one = a.memory_bytes
        probe.release(a)
        probe.shutdown()
        assert one > 0
        manager = ModelRegistry(store, config, max_memory_bytes=int(2.5 * one))
        for name in ("a", "b"):
            manager.release(await manager.acquire(name))
        manager.release(await manager.acquire("a"))  # a is now the most recently used
        c = await manager.acquire("c")
        assert sorted(manager.models) == ["a:latest", "c:latest"] and manager.memory_in_use <= 2.5 * one
        a = await manager.acquire("a")
        with pytest.raises(CapacityError) as e:  # a and c busy, b does not fit
            await manager.acquire("b")
        assert to_serve_error(e.value).status == 503 and "memory budget" in str(e.value)
        manager.release(a)
        manager.release(c)
        manager.shutdown()
        tight = ModelRegistry(store, config, max_memory_bytes=one // 2)
        with pytest.raises(CapacityError) as e:
            await tight.acquire("a")
        assert e.value.code == "insufficient_memory" and "takes" in str(e.value)  # measured at load, unloaded
        assert not tight.models
        tight._measured["a:latest"] = one  # the next time, the size is known before loading
        with pytest.raises(CapacityError) as e:
            await tight.acquire("a")
        assert "needs about" in str(e.value) and not tight.models
        tight.shutdown()

    asyncio.run(main())


def test_ps_reports_measured_memory(tmp_path, tiny_hf_dir):
    from fastapi.testclient import TestClient

    from athanor.serve.app import create_app

    store = tiny_store(tmp_path, tiny_hf_dir)
    with TestClient(create_app(store=store, engine_config=EngineConfig(num_kvcache_blocks=64, block_size=8))) as client:
        assert client.post("/api/generate", json={"model": "tiny"}).status_code == 200  # load only
        (entry,) = client.get("/api/ps").json()["models"]
        loaded = client.app.state.manager.models["tiny:latest"]
        assert entry["size"] == loaded.memory_bytes > 0


def test_in_process_models_share_the_servers_registry_and_memory_budget(tmp_path, tiny_hf_dir):
    """While `athanor serve` runs, an agent's or workflow's LocalChatModel gets its model from the server's registry:
    the same loaded engine as HTTP requests, listed by /api/ps, counted in --max-memory and evicted by LRU."""
    from fastapi.testclient import TestClient

    from athanor.llm.local import LocalChatModel
    from athanor.runtime.handle import ModelHandle
    from athanor.runtime.registry import get_registry
    from athanor.serve.app import create_app

    store = tiny_store(tmp_path, tiny_hf_dir, names=("a", "b"))
    config = EngineConfig(num_kvcache_blocks=64, block_size=8)
    probe = ModelRegistry(store, config)
    one = asyncio.run(probe.acquire("a")).memory_bytes
    probe.shutdown()
    app = create_app(store=store, engine_config=config, max_memory_bytes=int(1.5 * one))  # room for one model
    with TestClient(app) as client:
        registry = app.state.manager
        assert get_registry() is registry
        reply = LocalChatModel("a").chat([{"role": "user", "content": "hi"}], max_tokens=2, temperature=0)
        assert reply.usage.completion_tokens == 2
        (entry,) = client.get("/api/ps").json()["models"]
        assert entry["name"] in ("a", "a:latest") and entry["size"] == registry.memory_in_use == one
        engine = registry.models["a:latest"].engine
        http = client.post("/api/generate", json={"model": "a", "prompt": "hi", "stream": False,
                                                  "options": {"num_predict": 2, "temperature": 0}})
        assert http.status_code == 200 and registry.models["a:latest"].engine is engine  # one engine for both
        assert client.post("/api/generate", json={"model": "b"}).status_code == 200  # a (idle) makes room
        assert list(registry.models) == ["b:latest"]
        with ModelHandle.open("b") as held:  # an agent in the middle of a run holds b
            assert held.registry is registry and registry.models["b:latest"].num_active == 1
            busy = client.post("/api/generate", json={"model": "a"})
            assert busy.status_code == 503 and "memory budget" in busy.json()["error"]
    assert get_registry() is not registry  # the server's registry is the process's only while it runs


def test_loading_runs_in_a_thread_of_its_own_that_ends_with_it(tmp_path, tiny_hf_dir, monkeypatch):
    """The registry loads a model in a thread that ends with the load (async_engine.in_own_thread), not in asyncio's
    pooled threads, which live on: libgomp keeps an OpenMP pool for every thread that ran a parallel region (loading
    runs many), and one pool more than cores cuts every worker's spin-wait to ~100 turns, so the engine's workers
    sleep between a decode step's ~200 parallel regions and are woken by futex each time (SmolLM2 through `athanor
    serve`: ITL p50 8.4-8.6 -> 7.2-7.6 ms, benchmarks/RESULTS.md). Results and errors come back as awaited."""
    import threading

    from athanor.runtime.async_engine import in_own_thread

    seen = {}

    def work(n: int) -> int:
        seen["thread"] = threading.current_thread()
        return n * 2

    def boom() -> None:
        raise ValueError("bad file")

    async def main():
        assert await in_own_thread(work, 21) == 42
        with pytest.raises(ValueError, match="bad file"):
            await in_own_thread(boom)

    asyncio.run(main())
    seen["thread"].join(timeout=5)
    assert seen["thread"].name == "athanor-load" and not seen["thread"].is_alive()
    manager = ModelRegistry(tiny_store(tmp_path, tiny_hf_dir), EngineConfig(num_kvcache_blocks=32, block_size=8))
    load = manager._load
    monkeypatch.setattr(manager, "_load", lambda *a: (seen.update(load=threading.current_thread().name), load(*a))[1])

    async def acquire():
        manager.release(await manager.acquire("tiny"))
        manager.shutdown()

    asyncio.run(acquire())
    assert seen["load"] == "athanor-load"
