"""MCP tools run by the server: a session's `type: "mcp"` tools, listed and called over streamable
HTTP with the official `mcp` SDK (one short connection per operation, each bounded in time).

Which servers may be called is the operator's choice: `KOMBAIN_MCP_ALLOWED_URLS` lists URL
prefixes; with none, MCP tools are refused (a client must not make the node fetch arbitrary URLs).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from kombain.streaming.responders import Tool, ToolFailed

log = logging.getLogger("kombain.mcp")

MAX_TOOLS_PER_SERVER = 64
MAX_OUTPUT_CHARS = 64_000


@dataclass(frozen=True, slots=True)
class McpServer:
    """One `type: "mcp"` tool of a session."""

    label: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    allowed_tools: tuple[str, ...] | None = None  # None: every tool the server lists
    require_approval: str = "always"  # always | never


class McpError(RuntimeError):
    pass


class McpTools:
    """A session's MCP servers and the tools they listed (implements streaming's ServerTools)."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s
        self._servers: dict[str, McpServer] = {}
        self._tools: dict[str, tuple[McpServer, Tool]] = {}

    def tools(self) -> tuple[Tool, ...]:
        return tuple(tool for _, tool in self._tools.values())

    def label(self, name: str) -> str | None:
        entry = self._tools.get(name)
        return entry[0].label if entry is not None else None

    def needs_approval(self, name: str) -> bool:
        entry = self._tools.get(name)
        return entry is not None and entry[0].require_approval != "never"

    def forget(self, keep: set[str]) -> None:
        """Drop the servers (and their tools) whose labels are not in `keep`."""
        for label in [lb for lb in self._servers if lb not in keep]:
            del self._servers[label]
        self._tools = {n: (s, t) for n, (s, t) in self._tools.items() if s.label in self._servers}

    async def list(self, server: McpServer) -> list[dict[str, Any]]:
        """List the server's tools (those allowed) and make them callable; what was listed, as
        OpenAI's mcp_list_tools item reports it. Raises McpError."""
        result = await self._run(server, lambda client: client.list_tools())
        listed = [t for t in result.tools if server.allowed_tools is None or t.name in server.allowed_tools]
        listed = listed[:MAX_TOOLS_PER_SERVER]
        self._servers[server.label] = server
        self._tools = {n: (s, t) for n, (s, t) in self._tools.items() if s.label != server.label}
        for t in listed:
            schema = t.input_schema if isinstance(t.input_schema, dict) else {"type": "object", "properties": {}}
            self._tools.setdefault(t.name, (server, Tool(t.name, t.description or "", schema)))
        return [{"name": t.name, "description": t.description, "input_schema": t.input_schema, "annotations": None}
                for t in listed]

    async def call(self, name: str, arguments: str) -> str:
        entry = self._tools.get(name)
        if entry is None:
            raise ToolFailed(f"no MCP tool called {name!r}")
        server = entry[0]
        try:
            args = json.loads(arguments or "{}")
        except ValueError:
            raise ToolFailed(f"arguments for {name!r} are not JSON") from None
        try:
            result = await self._run(server, lambda client: client.call_tool(name, args))
        except McpError as exc:
            raise ToolFailed(str(exc)) from None
        text = "\n".join(getattr(block, "text", "") for block in result.content if getattr(block, "text", None))
        if not text and result.structured_content is not None:
            text = json.dumps(result.structured_content)
        if result.is_error:
            raise ToolFailed(text[:2000] or f"{name} failed")
        return text[:MAX_OUTPUT_CHARS]

    async def _run(self, server: McpServer, op: Any) -> Any:
        try:  # imported on first use: a node whose sessions name no MCP server never loads the SDK
            from mcp import Client
            from mcp.client.streamable_http import streamable_http_client
            from mcp.shared._httpx_utils import create_mcp_http_client
        except ImportError as exc:
            raise McpError(f"the mcp package is not installed: {exc}") from None
        http = create_mcp_http_client(headers=dict(server.headers))
        try:
            async with asyncio.timeout(self.timeout_s):
                async with Client(streamable_http_client(server.url, http_client=http)) as client:
                    return await op(client)
        except TimeoutError:
            raise McpError(f"MCP server {server.label!r} did not answer within {self.timeout_s:g} s") from None
        except Exception as exc:  # an unreachable or broken server, whatever the SDK raises for it
            log.info("MCP server %s (%s) failed: %r", server.label, server.url, exc)
            raise McpError(f"MCP server {server.label!r} failed: {_reason(exc)}") from None
        finally:
            await http.aclose()


def _reason(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:300]
