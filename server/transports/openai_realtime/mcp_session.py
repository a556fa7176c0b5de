"""A realtime session's MCP servers: listed when `session.update` names them, as OpenAI reports it
(`conversation.item.added` of an `mcp_list_tools` item, `mcp_list_tools.in_progress`, then
`.completed` or `.failed`, then `conversation.item.done`); their tools go to the conversation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from kombain.server.mcp_tools import McpError, McpServer, McpTools
from kombain.server.transports.openai_realtime.items import item_json
from kombain.server.transports.openai_realtime.protocol import server_event
from kombain.streaming.conversation import Conversation
from kombain.streaming.items import Item, new_item_id

log = logging.getLogger("kombain.mcp")


class McpSession:
    def __init__(self, send: Callable[[dict[str, Any]], None], timeout_s: float) -> None:
        self._send = send
        self.tools = McpTools(timeout_s)
        self._servers: dict[str, McpServer] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def update(self, servers: tuple[McpServer, ...], conversation: Conversation | None) -> None:
        """The session's MCP tools are now `servers`: list the new and the changed ones."""
        if conversation is not None:
            conversation.server_tools = self.tools
        self.tools.forget({s.label for s in servers})
        fresh = [s for s in servers if self._servers.get(s.label) != s]
        self._servers = {s.label: s for s in servers}
        for server in fresh:
            task = asyncio.get_running_loop().create_task(self._list(server))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def _list(self, server: McpServer) -> None:
        item = Item(new_item_id(), "mcp_list_tools", server_label=server.label, tools=[], status="in_progress")
        with contextlib.suppress(Exception):  # a session whose client is gone: nothing to tell
            self._send(server_event("conversation.item.added", previous_item_id=None, item=item_json(item)))
            self._send(server_event("mcp_list_tools.in_progress", item_id=item.id))
            try:
                item.tools = await self.tools.list(server)
                item.status, state = "completed", "completed"
            except McpError as exc:
                log.info("MCP server %s: listing its tools failed: %s", server.label, exc)
                item.status, state = "incomplete", "failed"
            self._send(server_event(f"mcp_list_tools.{state}", item_id=item.id))
            self._send(server_event("conversation.item.done", previous_item_id=None, item=item_json(item)))
