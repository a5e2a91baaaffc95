"""One script that tries every escape class and reports each outcome, for the routes into the sandbox.

The same attempts reach the jail four ways (run_python, the agent's python tool, a workflow code node run by
the engine, over HTTP and by the CLI); each place runs `escape_script(...)` and checks with `assert_refused`
that every attempt failed. Each attempt is a statement list that succeeds only if the escape works; the script
turns each outcome into "refused: <error>" or "ESCAPED: <what it got>".
"""

from __future__ import annotations

import json

# name -> code that raises when the attack fails and evaluates `got` when it works
_ATTEMPTS = {
    "ctypes": ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
               "if libc.setuid(0) != 0 and libc.mount(b'none', b'/usr', b'tmpfs', 0, None) != 0:\n"
               "    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))\ngot = 'root or mount'"),
    "dir_fd_openat": ("import os\nroot = os.open('/', os.O_RDONLY | os.O_DIRECTORY)\n"
                      "os.close(os.open({marker_rel!r}, os.O_WRONLY | os.O_CREAT, dir_fd=root))\ngot = 'wrote'"),
    # opened for writing but left unchanged, so even a jail that failed would not damage the host
    "write_stdlib": "import os\nopen(os.__file__, 'r+b').close()\ngot = 'opened for writing'",
    "proc_server_cmdline": "got = open('/proc/{server_pid}/cmdline', 'rb').read()",
    "proc_any_host_secret": ("import os\ngot = [open(f'/proc/{{p}}/cmdline', 'rb').read() for p in os.listdir('/proc')"
                             " if p.isdigit()]\nif not any({secret!r}.encode() in c for c in got):\n"
                             "    raise LookupError('no host process visible')"),
    "etc_shadow": "got = open('/etc/shadow').read()",
    "athanor_home": "import os\ngot = os.listdir({home!r})",
    "runs_sqlite": "got = open({home!r} + '/workflows/runs.sqlite', 'rb').read(16)",
    "socket_loopback": "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\ngot = 'connected'",
    "socket_server_port": ("import urllib.request\n"
                           "got = urllib.request.urlopen('http://127.0.0.1:{server_port}/health', timeout=2).read()"),
    "fork_bomb": ("import os, time\nfor _ in range(10000):\n    if os.fork() == 0:\n        time.sleep(60)\n"
                  "        os._exit(0)\ngot = '10000 processes'"),
    "allocate_2gb": "got = len(bytearray(2 * 1024**3))",
    # last: it empties sys.modules, which the attempts above would otherwise have to re-import
    "guard_tampering": ("import sys, os\nsys.modules.clear()\nsys.audit = lambda *a: None\n"
                        "os.execv('/bin/sh', ['sh', '-c', 'touch {marker}'])\ngot = 'shell'"),
}

_RUNNER = '''
import json as _json
_results = {{}}
for _name, _code in {attempts}.items():
    try:
        _scope = {{}}
        exec(_code, _scope)
        _results[_name] = "ESCAPED: " + repr(_scope.get("got"))[:200]
    except BaseException as _e:
        _results[_name] = "refused: " + type(_e).__name__ + ": " + str(_e)[:200]
'''


def escape_script(*, marker: str, port: int, server_port: int, server_pid: int, secret: str, home: str) -> str:
    """Statements that leave a dict `_results` {attempt: outcome}; `marker` is a host path that must stay absent."""
    values = {"marker": marker, "marker_rel": marker.lstrip("/"), "port": port, "server_port": server_port,
              "server_pid": server_pid, "secret": secret, "home": home}
    attempts = {name: code.format(**values) for name, code in _ATTEMPTS.items()}
    return _RUNNER.format(attempts=repr(attempts))


def as_program(script: str) -> str:
    """A whole program that prints the outcomes as one JSON line."""
    return script + "\nprint(_json.dumps(_results))\n"


def as_code_node(script: str) -> str:
    """A Dify code node body: main() returns {"results": outcomes}."""
    body = "\n".join("    " + line for line in script.splitlines())
    return f"def main() -> dict:\n{body}\n    return {{'results': _results}}\n"


def assert_refused(results: dict | str) -> None:
    results = json.loads(results) if isinstance(results, str) else results
    assert set(results) == set(_ATTEMPTS), results
    escaped = {k: v for k, v in results.items() if not v.startswith("refused: ")}
    assert not escaped, f"escapes that worked: {escaped}"
    assert "Resource temporarily unavailable" in results["fork_bomb"]
    assert "MemoryError" in results["allocate_2gb"]
    assert "Address family not supported" in results["socket_loopback"]
