"""code (sandboxed python3, typed outputs, escape attempts), http-request (real local server, allow-list),
document-extractor (real files)."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from athanor.workflow.services import Services
from tests.workflow.conftest import chain, code, dify_app, end, node, run_doc, start


def _code_run(source: str, outputs: dict, inputs: dict | None = None, variables: dict | None = None, **data):
    names = list((inputs or {}).keys())
    doc = dify_app([start(*names), code("c", source, outputs, variables=variables, **data),
                    end(**{k: ["c", k] for k in outputs})], chain("start", "c", "end"))
    return run_doc(doc, inputs or {})[0]


def test_code_node_inputs_and_typed_outputs():
    src = ("def main(a: str, b: str) -> dict:\n    print('noise on stdout')\n"
           "    return {'s': a + b, 'n': len(a) * 1.5, 'o': {'k': [a]}, 'l': [a, b], 'nums': [1, 2], 'flag': True}\n")
    outputs = {"s": "string", "n": "number", "o": "object", "l": "array[string]", "nums": "array[number]",
               "flag": "boolean"}
    result = _code_run(src, outputs, {"a": "xy", "b": "z"}, {"a": ["start", "a"], "b": ["start", "b"]})
    assert result.status == "succeeded", result.error
    assert result.outputs == {"s": "xyz", "n": 3.0, "o": {"k": ["xy"]}, "l": ["xy", "z"], "nums": [1, 2],
                              "flag": True}


@pytest.mark.parametrize("ret, outputs, message", [
    ("{'r': 5}", {"r": "string"}, "output 'r' must be string, got int"),
    ("{'r': 'x'}", {"r": "number"}, "output 'r' must be number, got str"),
    ("{'r': True}", {"r": "number"}, "must be number, got bool"),
    ("{'r': [1, 'a']}", {"r": "array[number]"}, "output 'r'[1] must be number"),
    ("{'other': 1}", {"r": "string"}, "output 'r' is missing"),
    ("[1, 2]", {"r": "string"}, "main() must return a dict"),
])
def test_code_node_wrong_output_is_a_node_error(ret, outputs, message):
    result = _code_run(f"def main() -> dict:\n    return {ret}\n", outputs)
    assert result.status == "failed" and message in result.error and "node c" in result.error


def test_code_node_refuses_javascript_and_reports_exceptions():
    result = _code_run("function main() { return {r: 1} }", {"r": "number"}, code_language="javascript")
    assert result.status == "failed" and "only python3" in result.error
    result = _code_run("def main() -> dict:\n    return {'r': 1 / 0}\n", {"r": "number"})
    assert result.status == "failed" and "ZeroDivisionError" in result.error


def test_code_node_timeout():
    doc = dify_app([start(), code("c", "def main() -> dict:\n    while True:\n        pass\n", {"r": "number"}),
                    end(r=["c", "r"])], chain("start", "c", "end"))
    result, _ = run_doc(doc, services=Services(code_timeout_s=1.0))
    assert result.status == "failed" and "longer than 1 s" in result.error


@pytest.mark.parametrize("body, refused", [
    ("import socket\n    socket.create_connection(('127.0.0.1', 9))", "Address family not supported"),
    ("import os\n    os.execv('/bin/sh', ['sh', '-c', 'true'])", "No such file or directory"),
    ("import subprocess\n    subprocess.run(['/usr/bin/env'])", "No such file or directory"),
    ("import os\n    os.open('usr/lib/python3.11/os.py', os.O_WRONLY, dir_fd=os.open('/', os.O_RDONLY))",
     "Permission denied"),
    ("open('/etc/shadow')", "No such file or directory"),
    (("import ctypes, os\n    libc = ctypes.CDLL(None, use_errno=True)\n"
      "    assert libc.unshare(0x10000000) == 0, os.strerror(ctypes.get_errno())"), "Operation not permitted"),
    ("import resource\n    resource.setrlimit(resource.RLIMIT_AS, (-1, -1))", "not allowed to raise maximum limit"),
])
def test_code_node_sandbox_refuses_escapes(body, refused):
    """A few escape classes through the engine (tests/workflow/test_code_sandbox.py runs them all)."""
    result = _code_run(f"def main() -> dict:\n    {body}\n    return {{'r': 'escaped'}}\n", {"r": "string"})
    assert result.status == "failed", "the sandbox let it through"
    assert refused in result.error


def test_code_node_output_flood_is_a_truthful_error():
    src = "def main() -> dict:\n    print('x' * (10 * 2**20))\n    return {'r': 1}\n"
    result = _code_run(src, {"r": "number"})
    assert result.status == "failed"
    assert re.search(r"code printed 10,485,\d{3} bytes; a code node may print at most 1,000,000$", result.error)


def test_code_node_memory_limit():
    doc = dify_app([start(), code("c", "def main() -> dict:\n    x = bytearray(400 * 2**20)\n    return {'r': 1}\n",
                                  {"r": "number"}), end(r=["c", "r"])], chain("start", "c", "end"))
    result, _ = run_doc(doc, services=Services(code_memory_mb=128))
    assert result.status == "failed" and "MemoryError" in result.error


def test_code_node_has_no_network_interface():
    src = "def main() -> dict:\n    return {'r': open('/proc/net/dev').read().count(':')}\n"
    result = _code_run(src, {"r": "number"})
    assert result.outputs == {"r": 1}  # its own loopback only


class _Echo(BaseHTTPRequestHandler):
    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = {"method": self.command, "path": self.path, "body": self.rfile.read(length).decode(),
                "auth": self.headers.get("Authorization"), "x": self.headers.get("X-Test"),
                "type": self.headers.get("Content-Type")}
        data = json.dumps(body).encode()
        self.send_response(201 if self.command == "POST" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def echo_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _http_doc(url: str, **data) -> dict:
    req = node("h", "http-request", url=url, **data)
    return dify_app([start("q"), req, end(status=["h", "status_code"], body=["h", "body"], headers=["h", "headers"])],
                    chain("start", "h", "end"))


def test_http_request_get_with_params_headers_auth(echo_server):
    doc = _http_doc(echo_server + "/search", method="get", headers="X-Test: {{#start.q#}}", params="q:{{#start.q#}}",
                    authorization={"type": "api-key", "config": {"type": "bearer", "api_key": "sekret"}},
                    body={"type": "none", "data": []}, timeout={"connect": 5, "read": 5, "write": 5})
    result, _ = run_doc(doc, {"q": "cats"})
    assert result.status == "succeeded", result.error
    echoed = json.loads(result.outputs["body"])
    assert result.outputs["status"] == 200 and echoed["path"] == "/search?q=cats"
    assert echoed["x"] == "cats" and echoed["auth"] == "Bearer sekret"
    assert result.outputs["headers"]["content-type"] == "application/json"


def test_http_request_post_json_and_form(echo_server):
    doc = _http_doc(echo_server + "/p", method="post", headers="",
                    body={"type": "json", "data": [{"type": "text", "value": '{"q": "{{#start.q#}}"}'}]})
    result, _ = run_doc(doc, {"q": "dogs"})
    echoed = json.loads(result.outputs["body"])
    assert result.outputs["status"] == 201 and json.loads(echoed["body"]) == {"q": "dogs"}
    assert echoed["type"] == "application/json"
    doc = _http_doc(echo_server + "/f", method="post",
                    body={"type": "x-www-form-urlencoded", "data": [{"key": "a", "type": "text", "value": "{{#start.q#}}"}]})
    echoed = json.loads(run_doc(doc, {"q": "x y"})[0].outputs["body"])
    assert echoed["body"] == "a=x+y"


def test_http_request_refuses_hosts_outside_the_allow_list(echo_server):
    result, _ = run_doc(_http_doc("http://example.com/", method="get"), {"q": ""})
    assert result.status == "failed" and "host 'example.com' is not allowed" in result.error
    port = echo_server.rsplit(":", 1)[1]
    result, _ = run_doc(_http_doc(f"http://127.0.0.1:{port}/", method="get"), {"q": ""},
                        services=Services(http_allow_hosts={"localhost"}))
    assert result.status == "failed" and "'127.0.0.1' is not allowed" in result.error


def test_document_extractor_reads_local_files(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\nFirst paragraph.\n")
    (tmp_path / "b.txt").write_text("plain text file")
    ext = node("x", "document-extractor", variable_selector=["start", "f"], is_array_file=False)
    doc = dify_app([start("f", types={"f": "file"}), ext, end(text=["x", "text"])], chain("start", "x", "end"))
    out = run_doc(doc, {"f": str(tmp_path / "a.md")})[0].outputs["text"]
    assert "Title" in out and "First paragraph." in out
    ext = node("x", "document-extractor", variable_selector=["start", "f"], is_array_file=True)
    doc = dify_app([start("f", types={"f": "file-list"}), ext, end(text=["x", "text"])], chain("start", "x", "end"))
    files = [{"path": str(tmp_path / "b.txt")}, str(tmp_path / "a.md")]
    out = run_doc(doc, {"f": files})[0].outputs["text"]
    assert out[0] == "plain text file" and "First paragraph." in out[1]
    result, _ = run_doc(doc, {"f": [str(tmp_path / "missing.txt")]})
    assert result.status == "failed" and "not found" in result.error
