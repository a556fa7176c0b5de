"""The official `openai` SDK's realtime client, as its users write it, against a server whose
`openai` responder talks to the scripted chat stand-in: a typed turn, a text-only response with
metadata, and a function call round trip (one call, two calls, the failures)."""

from __future__ import annotations

import asyncio
import json
import typing
from typing import Any

import openai
import pytest
from openai.types.realtime import realtime_server_event

pytestmark = pytest.mark.asyncio

WEATHER = {"type": "function", "name": "get_weather", "description": "The weather now in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def _known_types() -> set[str]:
    union = typing.get_args(typing.get_args(realtime_server_event.RealtimeServerEvent)[0])
    return {typing.get_args(m.model_fields["type"].annotation)[0] for m in union}


KNOWN = _known_types()


def client(agent_server: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="unused", base_url=agent_server.url + "/v1",
                              websocket_base_url=agent_server.ws_url + "/v1")


async def until_done(conn: Any, events: list[Any], timeout: float = 30) -> Any:
    """Read events (each one the SDK knows) up to the next response.done; returns it."""
    async with asyncio.timeout(timeout):
        async for event in conn:
            assert event.type in KNOWN, event.type
            events.append(event)
            if event.type == "response.done":
                return event.response
    raise AssertionError("the connection closed before response.done")


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


async def test_typed_turn_spoken_reply(agent_server):
    async with client(agent_server).realtime.connect(model="gpt-realtime") as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.session.update(session={"type": "realtime", "instructions": "Be brief.",
                                           "audio": {"input": {"turn_detection": None}}})
        await conn.conversation.item.create(item=user("Hello there"))
        await conn.response.create()
        events: list[Any] = []
        response = await until_done(conn, events)
    assert response.status == "completed"
    assert response.output[0].content[0].transcript == "The assistant heard Hello there. That is all."
    types = [e.type for e in events]
    assert "conversation.item.added" in types and "conversation.item.done" in types
    assert "response.output_audio.delta" in types and "error" not in types
    sent = agent_server.chat.state.requests[-1]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][-1] == {"role": "user", "content": "Hello there"}
    assert response.usage.input_tokens > 0 and response.usage.output_token_details.audio_tokens > 0


async def test_text_only_response_with_metadata(agent_server):
    async with client(agent_server).realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.conversation.item.create(item=user("Write it down"))
        await conn.response.create(response={"output_modalities": ["text"], "metadata": {"request": "r-17"}})
        events: list[Any] = []
        response = await until_done(conn, events)
    created = next(e for e in events if e.type == "response.created")
    assert created.response.metadata == {"request": "r-17"} and response.metadata == {"request": "r-17"}
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "The assistant heard Write it down. That is all."
    assert response.output[0].content[0].type == "output_text"
    assert not [e for e in events if e.type.startswith("response.output_audio")]
    # The stand-in reports usage: the counts are the model's (11 a message in, a token a word out).
    assert response.usage.input_tokens == 22 and response.usage.output_tokens == 9


async def test_function_call_round_trip(agent_server):
    chat = agent_server.chat
    async with client(agent_server).realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "tools": [WEATHER],
                                           "tool_choice": "auto"})
        await conn.conversation.item.create(item=user("What is the weather in Oslo?"))
        await conn.response.create()
        events: list[Any] = []
        response = await until_done(conn, events)
        assert response.status == "completed"
        call = response.output[0]
        assert (call.type, call.name, json.loads(call.arguments)) == ("function_call", "get_weather", {"city": "Oslo"})
        deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
        done = next(e for e in events if e.type == "response.function_call_arguments.done")
        assert deltas == done.arguments == call.arguments and done.call_id == call.call_id
        sent = chat.state.requests[-1]
        assert sent["tools"][0]["function"]["name"] == "get_weather" and sent["tool_choice"] == "auto"
        # The client runs the function and returns its output: the model answers from it.
        await conn.conversation.item.create(item={"type": "function_call_output", "call_id": call.call_id,
                                                  "output": "sunny, 21 degrees"})
        await conn.response.create()
        response = await until_done(conn, events)
        assert response.output[0].content[0].text == "The tool said sunny, 21 degrees. Anything else?"
        messages = chat.state.requests[-1]["messages"]
        assert messages[-2]["tool_calls"][0]["id"] == call.call_id
        assert messages[-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny, 21 degrees"}
        # Two cities: two calls in one response, each its own output item.
        await conn.conversation.item.create(item=user("And the weather in Paris and Rome?"))
        await conn.response.create(response={"tool_choice": {"type": "function", "name": "get_weather"}})
        response = await until_done(conn, events)
        assert [json.loads(o.arguments)["city"] for o in response.output] == ["Paris", "Rome"]
        assert chat.state.requests[-1]["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert not [e for e in events if e.type == "error"]


async def test_chat_endpoint_failures_fail_the_response_and_the_session_goes_on(agent_server):
    chat = agent_server.chat
    try:
        async with client(agent_server).realtime.connect(model="gpt-realtime") as conn:
            await conn.recv()
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "tools": [WEATHER]})
            await conn.conversation.item.create(item=user("What is the weather in Oslo?"))
            events: list[Any] = []
            for mode, reason in (("bad_tool", "not JSON"), ("error", "HTTP 500"), ("slow", "ReadTimeout")):
                chat.state.mode = mode
                await conn.response.create()
                response = await until_done(conn, events)
                assert response.status == "failed", mode
                assert reason in response.status_details.error.message
            # An endpoint that cannot call tools: told once, then answered without tools.
            chat.state.mode = "no_tools"
            for _ in range(2):
                await conn.response.create()
                response = await until_done(conn, events)
                assert response.status == "completed"
                assert response.output[0].content[0].text.startswith("The assistant heard")
            errors = [e.error.code for e in events if e.type == "error"]
            assert errors == ["tools_unsupported"]
    finally:
        chat.state.mode = "ok"
