"""The knowledge-base HTTP routes on a real `athanor serve` app (uvicorn on 127.0.0.1) driven by httpx."""

from __future__ import annotations

import contextlib

import httpx
import pytest


@contextlib.contextmanager
def _serve(app):
    from athanor.serve.background import serve_in_thread

    with serve_in_thread(app) as (url, _):
        yield url


@pytest.fixture
def url(embedder):
    from athanor.serve import kb_routes as routes
    from athanor.serve.app import create_app

    app = create_app()
    app.include_router(routes.router)
    with _serve(app) as base:
        yield base
    for kb, _ in routes._open.values():
        kb.close()
    routes._open.clear()


def test_create_add_query_delete(url):
    with httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/v1/kb", json={"name": "web", "chunk_overlap": 10})
        assert r.status_code == 201 and r.json()["chunk_size"] == 254  # MiniLM: 256 positions minus [CLS], [SEP]
        docs = [{"source": "handbook.md", "text": "# Tyres\n\nPatch a punctured tyre with a rubber patch and glue."},
                {"source": "notes.txt", "text": "The giraffe eats acacia leaves."}]
        r = c.post("/v1/kb/web/documents", json={"documents": docs})
        assert r.status_code == 200 and r.json()["added"] == ["handbook.md", "notes.txt"]
        r = c.post("/v1/kb/web/documents", json={"documents": docs[:1]})
        assert r.json()["unchanged"] == ["handbook.md"] and r.json()["num_embedded"] == 0
        r = c.post("/v1/kb/web/query", json={"query": "fix a flat tyre", "k": 1})
        hit = r.json()["hits"][0]
        assert hit["source"] == "handbook.md" and hit["location"] == "line 3, § Tyres"
        assert hit["citation"] == "handbook.md (line 3, § Tyres)"
        r = c.post("/v1/kb/web/query", json={"query": "giraffe", "mode": "keyword", "filters": {"ext": "txt"}})
        assert [h["source"] for h in r.json()["hits"]] == ["notes.txt"]
        assert [b["name"] for b in c.get("/v1/kb").json()["data"]] == ["web"]

        r = c.post("/v1/kb/web/query", json={"query": "x", "mode": "telepathy"})
        assert r.status_code == 400  # pydantic validation, answered by the server's handler
        r = c.post("/v1/kb/missing/query", json={"query": "x"})
        assert r.status_code == 400 and "no knowledge base" in r.json()["error"]["message"]
        r = c.post("/v1/kb", json={"name": "web"})
        assert r.status_code == 400 and "already exists" in r.json()["error"]["message"]

        assert c.delete("/v1/kb/web").json() == {"deleted": "web"}
        assert c.get("/v1/kb").json()["data"] == []
