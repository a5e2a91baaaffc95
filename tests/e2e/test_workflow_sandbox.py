"""The sandbox and workflow files over HTTP: a real `athanor serve` app on 127.0.0.1, driven with httpx.

POST /v1/workflows/run with a code node tries every escape class (the server's own port and process among the
targets), an endless loop and a 10 MB print; files in a run are uploads (POST /v1/files/upload) or URLs of
operator-listed hosts, never paths on the server.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
import yaml

from athanor.models.store import Store
from athanor.serve.app import create_app
from tests.agent.escapes import as_code_node, assert_refused, escape_script
from tests.e2e.conftest import start_server
from tests.workflow.conftest import chain, code, dify_app, end, node, start


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """No models: code and document-extractor nodes need none. Routes read ATHANOR_HOME per request."""
    with start_server(create_app(store=Store(tmp_path_factory.mktemp("sandbox_home")))) as s:
        yield s


def _install(name: str, doc: dict) -> None:
    apps = Path(os.environ["ATHANOR_HOME"]) / "workflows" / "apps"
    apps.mkdir(parents=True, exist_ok=True)
    (apps / f"{name}.yml").write_text(yaml.safe_dump(doc, sort_keys=False))


def _run(server, app: str, **body) -> dict:
    r = httpx.post(f"{server.url}/v1/workflows/run", json={"response_mode": "blocking", "app": app, **body},
                   timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def _code_app(source: str) -> dict:
    return dify_app([start(), code("c", source, {"results": "object"}), end(results=["c", "results"])],
                    chain("start", "c", "end"))


def test_every_escape_class_fails_over_http(server, tmp_path):
    port = urlparse(server.url).port
    script = escape_script(marker=str(tmp_path / "pwned"), port=port, server_port=port, server_pid=os.getpid(),
                           secret=sys.argv[0], home=os.environ["ATHANOR_HOME"])
    _install("escape", _code_app(as_code_node(script)))
    data = _run(server, "escape")
    assert data["status"] == "succeeded", data["error"]
    assert_refused(data["outputs"]["results"])
    assert not (tmp_path / "pwned").exists()


def test_endless_loop_and_output_flood_over_http(server):
    _install("loop", _code_app("def main() -> dict:\n    while True:\n        pass\n"))
    _install("flood", _code_app("def main() -> dict:\n    print('x' * (10 * 2**20))\n    return {'results': {}}\n"))
    data = _run(server, "loop")
    assert data["status"] == "failed" and "code ran longer than 10 s and was stopped" in data["error"]
    data = _run(server, "flood")
    assert data["status"] == "failed" and "a code node may print at most 1,000,000" in data["error"]
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200


# --- files ----------------------------------------------------------------------------------------------------


def _extractor_app(selector: list[str]) -> dict:
    ext = node("x", "document-extractor", variable_selector=selector, is_array_file=selector == ["sys", "files"])
    return dify_app([start("f", types={"f": "file"}), ext, end(text=["x", "text"])], chain("start", "x", "end"))


@pytest.mark.parametrize("value", [
    {"path": "/etc/hostname"}, {"path": "/no/such/file"}, "/etc/hostname", "file:///etc/hostname",
    {"transfer_method": "remote_url", "url": "file:///etc/hostname"},
    {"transfer_method": "local_file", "local_path": "/etc/hostname"},
    {"transfer_method": "local_file", "upload_file_id": "../../../../etc/hostname"},
])
def test_server_paths_are_never_read(server, value):
    _install("extract_input", _extractor_app(["start", "f"]))
    _install("extract_sys", _extractor_app(["sys", "files"]))
    host_text = Path("/etc/hostname").read_text().strip()
    errors = set()
    routes = [("extract_input", {"inputs": {"f": value}})]
    if isinstance(value, dict):  # the request schema takes files as objects only
        routes.append(("extract_sys", {"inputs": {"f": ""}, "files": [value]}))
    for app, body in routes:
        errors.add(_refusal(server, app, host_text, **body))
    assert len(errors) == 1  # the same answer whether a path exists or not
    message = errors.pop()
    assert any(m in message for m in ("server paths are not accepted", "not found (send the file to /v1/files/upload",
                                      "files take transfer_method local_file", "each file must be an object",
                                      "upload '../../../../etc/hostname' not found", "upload None not found")), message


def _refusal(server, app: str, host_text: str, **body) -> str:
    """What a hostile file value gets: a 4xx before the run (the service API resolves files first), or a failed
    run; never the file's text."""
    r = httpx.post(f"{server.url}/v1/workflows/run", json={"response_mode": "blocking", "app": app, **body},
                   timeout=120)
    assert host_text not in r.text
    if r.status_code in (400, 404):
        return r.json()["message"]
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["status"] == "failed"
    return data["error"].split(": ", 1)[1]


def test_uploaded_files_are_extracted(server, tmp_path):
    _install("extract_input", _extractor_app(["start", "f"]))
    r = httpx.post(f"{server.url}/v1/files/upload", files={"file": ("notes.md", b"# Notes\n\nUploaded text.\n")},
                   data={"user": "u1"}, headers={"X-Athanor-App": "extract_input"}, timeout=30)
    assert r.status_code == 201, r.text
    record = r.json()
    assert {record["name"], record["extension"], record["size"], record["created_by"]} == {"notes.md", "md", 24, "u1"}
    file = {"type": "document", "transfer_method": "local_file", "upload_file_id": record["id"]}
    data = _run(server, "extract_input", inputs={"f": file})
    assert data["status"] == "succeeded", data["error"]
    assert data["outputs"]["text"] == "# Notes\n\nUploaded text.\n"
    missing = httpx.post(f"{server.url}/v1/files/upload", data={"user": "u1"}, headers={"X-Athanor-App": "extract_input"},
                         timeout=30)
    assert missing.status_code == 415  # a form-urlencoded body is never parsed (serve/guards.py)
    empty = httpx.post(f"{server.url}/v1/files/upload", files={"user": (None, "u1")},
                       headers={"X-Athanor-App": "extract_input"}, timeout=30)
    assert empty.status_code == 400 and empty.json()["code"] == "no_file_uploaded"


def test_remote_urls_only_from_hosts_the_operator_lists(server, monkeypatch):
    _install("extract_input", _extractor_app(["start", "f"]))
    r = httpx.post(f"{server.url}/v1/files/upload", files={"file": ("a.txt", b"served text")},
                   headers={"X-Athanor-App": "extract_input"}, timeout=30)
    url = f"{server.url}/api/version"  # any URL on this server stands for a service on the loopback
    data = _run(server, "extract_input", inputs={"f": {"transfer_method": "remote_url", "url": url}})
    assert data["status"] == "failed" and "files from host '127.0.0.1' are not allowed" in data["error"]
    monkeypatch.setenv("ATHANOR_WORKFLOW_FILE_HOSTS", "127.0.0.1")
    data = _run(server, "extract_input", inputs={"f": {"transfer_method": "remote_url", "url": url}})
    assert data["status"] == "succeeded", data["error"]
    assert data["outputs"]["text"] == httpx.get(url, timeout=10).text
    assert r.status_code == 201


def test_server_refuses_code_without_the_sandbox_unless_started_with_unsafe_code(server, tmp_path, monkeypatch):
    from athanor.agent import isolation

    _install("uid", _code_app("def main() -> dict:\n    import os\n    return {'results': {'uid': os.getuid()}}\n"))
    assert _run(server, "uid")["outputs"]["results"] == {"uid": 65534}  # jailed: nobody
    monkeypatch.setattr(isolation, "_JAIL_WORKS", [])
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap, no prlimit
    data = _run(server, "uid")
    assert data["status"] == "failed"
    assert "code execution refused: the OS sandbox is unavailable: bubblewrap (bwrap) is not installed" in data["error"]
    monkeypatch.setenv("ATHANOR_UNSAFE_CODE", "1")  # what `athanor serve --unsafe-code` sets
    data = _run(server, "uid")
    assert data["status"] == "succeeded" and data["outputs"]["results"] == {"uid": os.getuid()}
