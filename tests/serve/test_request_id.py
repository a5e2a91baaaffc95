"""One request id from the HTTP request to the engine: the client's X-Request-Id (or ours) prefixes every engine
request made for it, distinct per engine request, and nothing leaks into code outside the request."""

from __future__ import annotations

from fastapi.testclient import TestClient

from athanor.engine.config import EngineConfig
from athanor.models.store import Store
from athanor.runtime.async_engine import AsyncEngine
from athanor.runtime.request_id import current_request_id, new_request_id, request_scope
from athanor.serve.app import create_app


def test_ids_in_a_scope_share_its_prefix_and_differ():
    with request_scope("req-7"):
        a, b = new_request_id(), new_request_id()
    assert a.startswith("req-7.") and b.startswith("req-7.") and a != b
    assert current_request_id() is None and not new_request_id().startswith("req-7")


def test_the_http_request_id_reaches_the_engine(tmp_path, tiny_hf_dir, monkeypatch):
    seen = []
    real = AsyncEngine.generate

    def spy(self, prompt_ids, params, request_id):
        seen.append(request_id)
        return real(self, prompt_ids, params, request_id)

    monkeypatch.setattr(AsyncEngine, "generate", spy)
    store = Store(tmp_path)
    (tmp_path / "Modelfile").write_text(f"FROM {tiny_hf_dir}\n")
    store.create("tiny", tmp_path / "Modelfile")
    with TestClient(create_app(store=store, engine_config=EngineConfig(num_kvcache_blocks=64, block_size=8))) as client:
        body = {"model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
        given = client.post("/api/generate", json=body, headers={"X-Request-Id": "req-42"})
        made = client.post("/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 2, "n": 2})
    assert given.status_code == 200 and given.headers["x-request-id"] == "req-42"
    assert made.status_code == 200
    ours = made.headers["x-request-id"]
    assert len(seen) == 3 and seen[0].startswith("req-42.")
    assert all(s.startswith(ours + ".") for s in seen[1:]) and seen[1] != seen[2]  # n=2: one id per choice
