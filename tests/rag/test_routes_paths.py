"""POST /v1/kb/{name}/paths on a real server (uvicorn on 127.0.0.1, httpx): server files are added only from the
allowed roots; `..`, symlinks out and relative paths are refused, and nothing outside is ever read."""

from __future__ import annotations

import httpx
import pytest


@pytest.fixture
def server(embedder):
    from athanor.serve import kb_routes as routes
    from athanor.serve.app import create_app
    from athanor.serve.background import serve_in_thread

    app = create_app()
    with serve_in_thread(app) as (url, _):
        yield app, httpx.Client(base_url=url, timeout=60)
    for kb, _ in routes._open.values():
        kb.close()
    routes._open.clear()


@pytest.fixture
def tree(tmp_path):
    root, outside = tmp_path / "allowed", tmp_path / "secret"
    (root / "docs").mkdir(parents=True)
    outside.mkdir()
    (root / "docs" / "tyres.md").write_text("# Tyres\n\nPatch a punctured tyre with a rubber patch and glue.\n")
    (outside / "passwords.txt").write_text("The vault combination is zebra-quartz-nine.\n")
    (root / "docs" / "leak.txt").symlink_to(outside / "passwords.txt")  # a file symlink out of the root
    (root / "escape").symlink_to(outside, target_is_directory=True)  # a folder symlink out of the root
    return root, outside


def _error(r):
    return r.status_code, r.json()["error"]["message"]


def test_off_unless_roots_are_configured(server, tree, monkeypatch):
    _, c = server
    monkeypatch.delenv("ATHANOR_KB_ROOTS", raising=False)
    assert c.post("/v1/kb", json={"name": "p"}).status_code == 201
    status, msg = _error(c.post("/v1/kb/p/paths", json={"paths": [str(tree[0] / "docs")]}))
    assert status == 403 and "ATHANOR_KB_ROOTS" in msg


def test_adds_inside_the_roots_and_refuses_escapes(server, tree, monkeypatch):
    _, c = server
    root, outside = tree
    monkeypatch.setenv("ATHANOR_KB_ROOTS", str(root))
    assert c.post("/v1/kb", json={"name": "p"}).status_code == 201
    r = c.post("/v1/kb/p/paths", json={"paths": [str(root / "docs")]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["added"] == [str((root / "docs" / "tyres.md").resolve())]
    assert body["failed"] == [[str((outside / "passwords.txt").resolve()),
                               "outside the allowed roots (a symlink out?); not read"]]
    hits = c.post("/v1/kb/p/query", json={"query": "punctured tyre", "k": 1}).json()["hits"]
    assert hits[0]["source"].endswith("tyres.md")
    assert c.post("/v1/kb/p/query", json={"query": "vault combination zebra", "mode": "keyword"}).json()["hits"] == []

    for path in [str(root / ".." / "secret" / "passwords.txt"), str(root / "escape"), str(outside),
                 str(root / "escape" / "passwords.txt")]:
        status, msg = _error(c.post("/v1/kb/p/paths", json={"paths": [path]}))
        assert status == 403 and "outside the allowed roots" in msg, path
    status, msg = _error(c.post("/v1/kb/p/paths", json={"paths": ["docs/tyres.md"]}))
    assert status == 400 and "not an absolute path" in msg
    status, msg = _error(c.post("/v1/kb/p/paths", json={"paths": [str(root / "missing.md")]}))
    assert status == 400 and "no such file" in msg
    status, _ = _error(c.post("/v1/kb/p/paths", json={"paths": [str(root / "docs"), str(outside)]}))
    assert status == 403  # one bad path refuses the whole request before anything is read
    assert c.get("/v1/kb").json()["data"][0]["documents"] == 1


def test_roots_from_app_state_win_over_the_environment(server, tree, monkeypatch):
    app, c = server
    root, outside = tree
    monkeypatch.setenv("ATHANOR_KB_ROOTS", str(outside))
    app.state.kb_roots = [str(root / "docs")]
    c.post("/v1/kb", json={"name": "s"})
    assert c.post("/v1/kb/s/paths", json={"paths": [str(root / "docs" / "tyres.md")]}).json()["added"]
    status, _ = _error(c.post("/v1/kb/s/paths", json={"paths": [str(outside / "passwords.txt")]}))
    assert status == 403
