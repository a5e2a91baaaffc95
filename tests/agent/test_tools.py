"""Tools: the @tool schema, the calculator (never evaluates names or calls), confined files, http_get's allow-list."""

from __future__ import annotations

import threading
from typing import Literal

import pytest

from athanor.agent.calculator import calculate, calculator
from athanor.agent.files import http_get_tool, list_dir_tool, read_file_tool
from athanor.agent.tools import Tool, ToolError, arguments_from_text, openai_tool_spec, tool


@tool
def search(query: str, limit: int = 5, mode: Literal["fast", "full"] = "fast", tags: list[str] | None = None) -> str:
    """Search the notes.

    Args:
        query: what to look for
        limit (int): how many hits
    """
    return f"{query}|{limit}|{mode}|{tags}"


def test_tool_decorator_builds_the_schema_from_hints_and_docstring():
    assert isinstance(search, Tool)
    assert search.name == "search" and search.description == "Search the notes."
    p = search.parameters
    assert p["required"] == ["query"]
    assert p["properties"]["query"] == {"type": "string", "description": "what to look for"}
    assert p["properties"]["limit"] == {"type": "integer", "description": "how many hits", "default": 5}
    assert p["properties"]["mode"]["enum"] == ["fast", "full"]
    assert p["properties"]["tags"]["type"] == "array" and p["properties"]["tags"]["items"] == {"type": "string"}
    assert openai_tool_spec(search)["function"]["name"] == "search"


def test_tool_arguments_are_checked_and_coerced():
    assert search.call({"query": "x", "limit": "3"}) == "x|3|fast|None"
    with pytest.raises(ToolError, match="missing argument"):
        search.call({})
    with pytest.raises(ToolError, match="unknown argument.*bogus"):
        search.call({"query": "x", "bogus": 1})
    with pytest.raises(ToolError, match="one of"):
        search.call({"query": "x", "mode": "slow"})
    with pytest.raises(ToolError, match="integer"):
        search.call({"query": "x", "limit": "many"})


def test_plain_text_input_goes_to_a_single_string_argument():
    assert arguments_from_text(search, "cats") == {"query": "cats"}
    assert arguments_from_text(search, '"cats"') == {"query": "cats"}
    assert arguments_from_text(search, '{"query": "dogs", "limit": 2}') == {"query": "dogs", "limit": 2}
    assert arguments_from_text(search, '{"query": "dogs"}\nor, to answer: ...') == {"query": "dogs"}
    with pytest.raises(ToolError, match="does not parse"):
        arguments_from_text(search, '{"query": ')


@pytest.mark.parametrize("expr, value", [
    ("17*23", 391), ("2 + 3 * 4", 14), ("(2+3)*4", 20), ("-3 ** 2", -9), ("7 // 2", 3), ("7 % 4", 3),
    ("1/4", 0.25), ("2**-1", 0.5), ("+5", 5), ("17 × 23 =", 391), ("1.5e3", 1500.0),
])
def test_calculator_does_arithmetic(expr, value):
    assert calculate(expr) == value


def test_calculator_tool_formats_results():
    assert calculator.call({"expression": "17*23"}) == "391"
    assert calculator.call({"expression": "10/4"}) == "2.5"
    assert calculator.call({"expression": "10/2"}) == "5"


@pytest.mark.parametrize("expr", [
    "__import__('os').system('touch {tmp}/pwned')", "open('/etc/passwd').read()", "x + 1", "abs(-1)",
    "(1).__class__", "[1, 2][0]", "'a' * 3", "1 if 1 else 2", "lambda: 1", "1 < 2", "True + 1",
    "(x := 5)", "f'{1}'", "1j * 1j",
])
def test_calculator_never_evaluates_names_or_calls(expr, tmp_path):
    with pytest.raises(ToolError):
        calculate(expr.replace("{tmp}", str(tmp_path)))
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("expr, message", [
    ("9**9**9", "too large"), ("2**100000", "too large"), ("1/0", "division by zero"), ("5 % 0", "division by zero"),
    ("2^10", "\\*\\*"), ("1" * 600, "longer than"), ("", "empty"), ("1 +", "not an arithmetic"),
    ("1e308 * 10", "not finite"), ("(-8) ** 0.5", "not a real"), ("10.0 ** 400", "too large"),
])
def test_calculator_refuses_with_a_reason(expr, message):
    with pytest.raises(ToolError, match=message):
        calculate(expr)


# ----------------------------------------------------------------------------------------------- files


@pytest.fixture()
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("hello")
    (root / "sub" / "b.txt").write_text("inner")
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    (root / "escape").symlink_to(tmp_path / "secret.txt")
    (root / "escape_dir").symlink_to(tmp_path)
    (root / "inside_link").symlink_to(root / "a.txt")
    return root


def test_read_file_and_list_dir_inside_the_root(tree):
    read, ls = read_file_tool(tree), list_dir_tool(tree)
    assert read.call({"path": "a.txt"}) == "hello"
    assert read.call({"path": "sub/../sub/b.txt"}) == "inner"
    assert read.call({"path": "inside_link"}) == "hello"  # a symlink that stays inside is fine
    assert ls.call({}).splitlines() == ["a.txt", "escape", "escape_dir/", "inside_link", "sub/"]
    assert ls.call({"path": "sub"}) == "b.txt"


@pytest.mark.parametrize("path", ["../secret.txt", "sub/../../secret.txt", "escape", "escape_dir/secret.txt",
                                  "/etc/passwd", "{tmp}/secret.txt", "a.txt\x00"])
def test_read_file_refuses_traversal_and_symlink_escapes(tree, path):
    read = read_file_tool(tree)
    with pytest.raises(ToolError) as e:
        read.call({"path": path.format(tmp=tree.parent)})
    assert "TOP SECRET" not in str(e.value)


@pytest.mark.parametrize("path", ["..", "escape_dir", "/", "sub/../.."])
def test_list_dir_refuses_escapes(tree, path):
    with pytest.raises(ToolError, match="outside the allowed directory"):
        list_dir_tool(tree).call({"path": path})


def test_read_file_truncates_big_files(tree):
    (tree / "big.txt").write_text("y" * 1000)
    assert read_file_tool(tree, max_bytes=100).call({"path": "big.txt"}).endswith("(truncated)")


# ----------------------------------------------------------------------------------------------- http_get


@pytest.fixture(scope="module")
def web():
    """A real HTTP server on 127.0.0.1 with a page and a redirect to a host that is not allowed."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/away":
                self.send_response(302)
                self.send_header("Location", "http://example.invalid/x")
                self.end_headers()
                return
            if self.path == "/hop":
                self.send_response(302)
                self.send_header("Location", "/page")
                self.end_headers()
                return
            body = b"page body"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_get_allowed_host_and_checked_redirects(web):
    get = http_get_tool(["127.0.0.1"])
    assert get.call({"url": web + "/page"}) == "HTTP 200\npage body"
    assert get.call({"url": web + "/hop"}) == "HTTP 200\npage body"
    with pytest.raises(ToolError, match="example.invalid.*not allowed"):
        get.call({"url": web + "/away"})


@pytest.mark.parametrize("url", ["http://localhost:1/", "file:///etc/passwd", "http://user:pw@127.0.0.1/",
                                 "http://127.0.0.1.evil.com/", "ftp://127.0.0.1/"])
def test_http_get_refuses_other_hosts_and_schemes(url):
    with pytest.raises(ToolError, match="not allowed|only http"):
        http_get_tool(["127.0.0.1"]).call({"url": url})
