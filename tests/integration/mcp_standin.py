"""A small MCP server written with the official `mcp` SDK, served over streamable HTTP on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from tests.conftest import free_port


def make_server() -> MCPServer:
    srv = MCPServer("weather")

    @srv.tool()
    def get_weather(city: str) -> str:
        """The weather now in a city."""
        return f"sunny in {city}"

    @srv.tool()
    def broken_weather(city: str) -> str:
        """A weather tool whose station is down."""
        raise ToolError(f"the station in {city} is down")  # told to the caller as it is

    return srv


@contextmanager
def mcp_server() -> Iterator[str]:
    """Yields the server's MCP endpoint URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(make_server().streamable_http_app(), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(10)
