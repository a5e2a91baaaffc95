"""A real MCP server written with the SDK's server API, for the MCP round-trip tests.

python mcp_server.py            -> stdio
python mcp_server.py http PORT  -> streamable HTTP on 127.0.0.1:PORT/mcp
"""

import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("athanor-test", log_level="CRITICAL")


@server.tool()
def add(a: int, b: int) -> str:
    """Add two integers."""
    return str(a + b)


@server.tool()
def shout(text: str) -> str:
    """Upper-case the text."""
    return text.upper()


@server.tool()
def fail(reason: str) -> str:
    """Always refuses (a ToolError: its message reaches the client)."""
    raise ToolError(f"refused: {reason}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
