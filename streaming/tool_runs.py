"""A response's tool calls as output items: a client's function calls (the client runs them), and
calls to tools the server runs itself (MCP), run here or first put to the client for approval."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Protocol

from kombain.streaming.conversation_events import (
    ArgumentsDelta,
    ConversationEvent,
    ItemDone,
    ToolRunState,
)
from kombain.streaming.items import Item, Items, new_item_id
from kombain.streaming.responders import ServerTools, ToolCall, ToolFailed
from kombain.streaming.response_state import Response

MAX_TOOL_OUTPUT_CHARS = 64_000  # of a server-run tool's output kept in the conversation


class Conversation(Protocol):
    """What the tool runs use of `streaming.conversation.Conversation` (declared here, so this
    module does not import the one that imports it)."""

    server_tools: ServerTools | None
    items: Items
    _emit: Callable[[ConversationEvent], None]

    def _output_item(self, resp: Response, item: Item) -> None: ...

    def _previous(self, resp: Response, item: Item) -> str | None: ...


async def run_tool_calls(conv: Conversation, resp: Response) -> bool:
    """Emit the response's tool calls as items, running those the server owns (unless they need
    approval). True when a server tool ran: the model should go on from its output."""
    ran = False
    for call in resp.tool_calls:
        label = conv.server_tools.label(call.name) if conv.server_tools is not None else None
        if label is None:
            _function_call(conv, resp, call)
        elif conv.server_tools is not None and conv.server_tools.needs_approval(call.name):
            item = Item(new_item_id(), "mcp_approval_request", name=call.name, arguments=call.arguments,
                        server_label=label)
            conv._output_item(resp, item)
            _done(conv, resp, item)
        else:
            await run_server_call(conv, resp, call.name, call.arguments, label)
            ran = True
    return ran


async def run_approved(conv: Conversation, resp: Response) -> bool:
    """Calls the client approved since the last response (`mcp_approval_response`), run now as
    this response's first output items. True when any ran."""
    if conv.server_tools is None:
        return False
    items = list(conv.items)
    done = {i.approval_request_id for i in items if i.type == "mcp_call"}
    approved = {i.approval_request_id for i in items if i.type == "mcp_approval_response" and i.approve}
    ran = False
    for req in items:
        if req.type == "mcp_approval_request" and req.id in approved and req.id not in done:
            await run_server_call(conv, resp, req.name or "", req.arguments or "{}", req.server_label or "", req.id)
            ran = True
    return ran


async def run_server_call(conv: Conversation, resp: Response, name: str, arguments: str, label: str,
                          approval_request_id: str | None = None) -> None:
    item = Item(new_item_id(), "mcp_call", name=name, arguments="", server_label=label, status="in_progress",
                approval_request_id=approval_request_id)
    conv._output_item(resp, item)
    index = len(resp.output) - 1
    item.arguments = arguments
    conv._emit(ArgumentsDelta(resp.id, item.id, "", arguments, index, kind="mcp_call"))
    conv._emit(ToolRunState(resp.id, item.id, index, "in_progress"))
    assert conv.server_tools is not None
    try:
        item.output = (await conv.server_tools.call(name, arguments))[:MAX_TOOL_OUTPUT_CHARS]
        item.status = "completed"
    except ToolFailed as exc:
        item.error, item.status = str(exc)[:2000], "incomplete"
    conv._emit(ToolRunState(resp.id, item.id, index, "failed" if item.error else "completed"))
    _done(conv, resp, item)


def _function_call(conv: Conversation, resp: Response, call: ToolCall) -> None:
    item = Item(new_item_id(), "function_call", call_id=call.call_id or "call_" + secrets.token_hex(8),
                name=call.name, arguments="", status="in_progress")
    conv._output_item(resp, item)
    index = len(resp.output) - 1
    item.arguments = call.arguments
    conv._emit(ArgumentsDelta(resp.id, item.id, item.call_id or "", call.arguments, index))
    item.status = "completed"
    _done(conv, resp, item)


def _done(conv: Conversation, resp: Response, item: Item) -> None:
    conv._emit(ItemDone(item.copy(), conv._previous(resp, item), resp.id, resp.output.index(item),
                        resp.options.in_conversation))
