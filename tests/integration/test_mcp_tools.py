"""MCP tools run by kombain itself: a real MCP server (the official SDK, streamable HTTP, loopback)
named in session.update, its tools listed and called by the server, with approvals, failures and
an unreachable server; the LLM responder talks to the scripted chat stand-in."""

from __future__ import annotations

import typing
from typing import Any

import pytest
from openai.types.realtime import realtime_server_event

from tests.integration.helpers import RawSession, open_session

pytestmark = pytest.mark.asyncio

KNOWN = {typing.get_args(m.model_fields["type"].annotation)[0]
         for m in typing.get_args(typing.get_args(realtime_server_event.RealtimeServerEvent)[0])}


def mcp_tool(url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "weather", "server_url": url, **extra}


def user(text: str) -> dict[str, Any]:
    return {"type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}


async def session_with(agent_server: Any, tool: dict[str, Any]) -> RawSession:
    s = await open_session(agent_server.ws_url, turn_detection=None, output_modalities=["text"], tools=[tool])
    listed = await s.wait_for("mcp_list_tools.completed", timeout=15)
    done = await s.wait_for("conversation.item.done", timeout=5)  # right after the completed event
    assert done[-1]["item"]["id"] == listed[0]["item_id"] and done[-1]["item"]["type"] == "mcp_list_tools"
    return s


async def test_tools_listed_and_run_by_the_server(agent_server):
    s = await session_with(agent_server, mcp_tool(agent_server.mcp_url, require_approval="never",
                                                  allowed_tools=["get_weather"]))
    try:
        listed = [e["item"] for e in s.of("conversation.item.done") if e["item"]["type"] == "mcp_list_tools"][0]
        assert [t["name"] for t in listed["tools"]] == ["get_weather"]
        assert listed["tools"][0]["input_schema"]["properties"]["city"]["type"] == "string"
        await s.send(user("What is the weather in Oslo?"))
        await s.send({"type": "response.create"})
        # The call is run by the server; the model goes on from its output in the next response.
        done = await s.wait_for("response.done", 2, timeout=20)
        call = done[0]["response"]["output"][0]
        assert (call["type"], call["name"], call["output"], call["error"]) == ("mcp_call", "get_weather",
                                                                             "sunny in Oslo", None)
        assert done[1]["response"]["output"][0]["content"][0]["text"] == "The tool said sunny in Oslo. Anything else?"
        types = [e["type"] for e in s.events]
        for t in ("response.mcp_call_arguments.delta", "response.mcp_call_arguments.done",
                  "response.mcp_call.in_progress", "response.mcp_call.completed"):
            assert t in types
        assert types.index("response.mcp_call.in_progress") < types.index("response.mcp_call.completed")
        sent = agent_server.chat.state.requests[-1]["messages"]
        assert sent[-1] == {"role": "tool", "tool_call_id": call["id"], "content": "sunny in Oslo"}
        assert set(types) <= KNOWN and not s.of("error")
    finally:
        await s.close()


async def test_a_call_that_needs_approval_runs_once_approved(agent_server):
    s = await session_with(agent_server, mcp_tool(agent_server.mcp_url, allowed_tools=["get_weather"]))
    try:
        await s.send(user("What is the weather in Paris?"))
        await s.send({"type": "response.create"})
        request = (await s.wait_for("response.done"))[0]["response"]["output"][0]
        assert request["type"] == "mcp_approval_request" and request["name"] == "get_weather"
        assert not s.of("response.mcp_call.in_progress")  # nothing runs before the client says yes
        await s.send({"type": "conversation.item.create", "item": {
            "type": "mcp_approval_response", "approval_request_id": request["id"], "approve": True}})
        await s.send({"type": "response.create"})
        resp = (await s.wait_for("response.done", 2, timeout=20))[1]["response"]
        call, answer = resp["output"][0], resp["output"][1]
        assert call["type"] == "mcp_call" and call["approval_request_id"] == request["id"]
        assert call["output"] == "sunny in Paris"
        assert answer["content"][0]["text"] == "The tool said sunny in Paris. Anything else?"
        await s.send({"type": "conversation.item.create", "item": {
            "type": "mcp_approval_response", "approval_request_id": "item_none", "approve": True}})
        assert (await s.wait_for("error"))[0]["error"]["code"] == "item_not_found"
    finally:
        await s.close()


async def test_a_failing_tool_and_an_unreachable_server(agent_server):
    s = await session_with(agent_server, mcp_tool(agent_server.mcp_url, require_approval="never",
                                                  allowed_tools=["broken_weather"]))
    try:
        await s.send(user("What is the weather in Rome?"))
        await s.send({"type": "response.create"})
        done = await s.wait_for("response.done", 2, timeout=20)
        call = done[0]["response"]["output"][0]
        assert call["type"] == "mcp_call" and "station in Rome is down" in call["error"]["message"]
        assert s.of("response.mcp_call.failed")
        assert done[1]["response"]["output"][0]["content"][0]["text"].startswith("The tool said The tool failed")
    finally:
        await s.close()
    # Nothing listens there: listing fails, the session goes on.
    s = await open_session(agent_server.ws_url, turn_detection=None)
    try:
        await s.send({"type": "session.update", "session": {"tools": [
            mcp_tool("http://127.0.0.1:9/mcp", require_approval="never")]}})
        await s.wait_for("mcp_list_tools.failed", timeout=15)
        await s.send({"type": "session.update", "session": {"tools": [mcp_tool("http://10.1.2.3/mcp")]}})
        err = (await s.wait_for("error"))[0]["error"]
        assert err["code"] == "invalid_value" and err["param"] == "session.tools[0].server_url"
    finally:
        await s.close()
