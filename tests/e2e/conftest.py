"""Real `athanor serve` instances on 127.0.0.1 (uvicorn in a thread, a free port each) for the e2e tests.

`server`: the shared one (no auth) with the built-in smollm2 and a `tiny` model (random tiny Qwen2 for fast
protocol checks). `start_server(app)`: a context manager for tests that need their own (auth, stuck loop).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from athanor.engine.config import EngineConfig
from athanor.models.store import Store
from athanor.serve.app import create_app
from tests.session_servers import session_owned


@dataclass
class Server:
    url: str
    app: object

    @property
    def manager(self):
        return self.app.state.manager

    def metric(self, name: str, model: str | None = None) -> float:
        """Sum of a metric's samples (one model's when `model` is given) from GET /metrics."""
        text = httpx.get(f"{self.url}/metrics", headers=self.headers, timeout=10).text
        total = 0.0
        for line in text.splitlines():
            m = re.match(rf"^{name}(\{{[^}}]*\}})? (\S+)$", line)
            if m and (model is None or f'model="{model}"' in (m.group(1) or "")):
                total += float(m.group(2))
        return total

    headers: dict | None = None
    uvicorn_server: object = None  # set `.should_exit = True` to do what SIGTERM does


@contextlib.contextmanager
def start_server(app, headers: dict | None = None):
    from athanor.serve.background import serve_in_thread

    with serve_in_thread(app) as (url, server):
        yield Server(url, app, headers, server)


def make_store(home: Path, tiny_hf_dir: Path) -> Store:
    store = Store(home)
    modelfile = home / "Modelfile.tiny"
    modelfile.write_text(f"FROM {tiny_hf_dir}\nPARAMETER temperature 0\n")
    store.create("tiny", modelfile)
    return store


def small_engine_config() -> EngineConfig:
    return EngineConfig(kv_cache_bytes=64 * 2**20, max_num_seqs=32)


@pytest.fixture(scope="session")
def server(tmp_path_factory, tiny_hf_dir):
    store = make_store(tmp_path_factory.mktemp("serve_home"), tiny_hf_dir)
    app = create_app(store=store, engine_config=small_engine_config())
    with start_server(app) as s:
        session_owned(app)  # tests that do not use this server do not see its registry or tracer
        yield s
