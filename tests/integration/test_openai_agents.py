"""openai-agents' realtime agents (`RealtimeAgent`, `RealtimeRunner`), as its users write them, against
a server whose `openai` responder talks to the scripted chat stand-in: a typed message, a
`@function_tool` the SDK runs, and a barge-in with the SDK's own truncate, with no error events."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from agents import function_tool
from agents.realtime import RealtimeAgent, RealtimeRunner

from tests.conftest import SPEECH_DIR
from tests.integration.helpers import clip_pcm16

pytestmark = pytest.mark.asyncio


def raw_type(event: Any) -> str | None:
    """The server event type behind a raw_model_event (None for the SDK's own events)."""
    if event.type != "raw_model_event" or event.data.type != "raw_server_event":
        return None
    return event.data.data.get("type")


async def start(agent_server: Any, agent: RealtimeAgent, **settings: Any) -> Any:
    runner = RealtimeRunner(starting_agent=agent, config={"model_settings": {"model_name": "gpt-realtime", **settings}})
    return await runner.run(model_config={"url": agent_server.ws_url + "/v1/realtime?model=gpt-realtime",
                                          "api_key": "unused"})


async def test_send_message_and_a_function_tool_the_sdk_runs(agent_server):
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather now in a city."""
        asked.append(city)
        return f"sunny in {city}"

    agent = RealtimeAgent(name="Assistant", instructions="Answer briefly.", tools=[get_weather])
    session = await start(agent_server, agent, output_modalities=["text"])
    events: list[Any] = []
    texts: list[str] = []
    async with session:
        await session.send_message("What is the weather in Oslo?")
        async with asyncio.timeout(30):
            async for event in session:
                events.append(event)
                if raw_type(event) == "response.output_text.done":
                    texts.append(event.data.data["text"])
                    break
    assert asked == ["Oslo"]
    kinds = [e.type for e in events]
    assert "tool_start" in kinds and "tool_end" in kinds
    assert texts == ["The tool said sunny in Oslo. Anything else?"]
    assert not [e for e in events if e.type == "error" or raw_type(e) == "error"], \
        [getattr(e, "error", None) for e in events if e.type == "error"]
    # The history the SDK keeps from the item events has the typed turn and the call.
    history = [e.history for e in events if e.type == "history_updated"][-1]
    assert [i.type for i in history][:2] == ["message", "function_call"]
    assert history[0].role == "user" and history[0].content[0].text == "What is the weather in Oslo?"
    sent = agent_server.chat.state.requests[-1]["messages"]
    assert sent[1] == {"role": "user", "content": "What is the weather in Oslo?"}
    assert sent[-1]["role"] == "tool" and sent[-1]["content"] == "sunny in Oslo"


async def test_barge_in_with_the_sdks_truncate_and_no_error_events(agent_server):
    agent = RealtimeAgent(name="Assistant", instructions="Answer briefly.")
    session = await start(agent_server, agent, turn_detection={"type": "server_vad", "silence_duration_ms": 500})
    speech = clip_pcm16(SPEECH_DIR / "arctic_a0009.wav", 24000)
    events: list[Any] = []
    async with session:
        await session.send_message("Please tell me a long story about the sea and the ships upon it.")
        async with asyncio.timeout(40):
            talking = False
            async for event in session:
                events.append(event)
                if event.type == "audio" and not talking:
                    talking = True  # the reply is playing: the caller talks over it

                    async def speak() -> None:
                        for i in range(0, len(speech), 4800):
                            await session.send_audio(speech[i:i + 4800])
                            await asyncio.sleep(0.1)

                    asyncio.get_running_loop().create_task(speak())
                if raw_type(event) == "conversation.item.input_audio_transcription.completed":
                    break
        # The SDK now retrieves the items it tracks; collect what the server answers to it.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.5):
                async for event in session:
                    events.append(event)
    types = [raw_type(e) for e in events]
    assert "conversation.item.truncated" in types and "conversation.item.retrieved" in types
    cancelled = [e.data.data["response"] for e in events if raw_type(e) == "response.done"]
    assert cancelled and cancelled[0]["status"] == "cancelled"
    assert any(e.type == "audio_interrupted" for e in events)
    errors = [e for e in events if e.type == "error" or raw_type(e) == "error"]
    assert not errors, [getattr(e, "error", None) or e.data.data for e in errors]
