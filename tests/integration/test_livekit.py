"""livekit-agents' OpenAI plugin, as an agent builds it, against a live kombain server.

The plugin's STT and TTS are built with their defaults (STT `gpt-4o-mini-transcribe` over REST,
TTS `gpt-4o-mini-tts`, voice `ash`, which always asks for `stream_format: "sse"`) and only
`base_url` pointing at kombain. They run without a LiveKit room: an `AgentSession` would call the
same `recognize()` and `synthesize()`; the room only carries the audio. The realtime model runs
as its session API and as an `AgentSession` with no room (livekit's testing API, `session.run()`).
Only loopback is used.
"""

from __future__ import annotations

import asyncio
import io
import wave

import httpx
import pytest
from livekit import rtc
from livekit.agents import Agent, AgentSession, function_tool, llm
from livekit.agents.metrics import TTSMetrics
from livekit.plugins import openai as lk_openai

from tests.conftest import SPEECH_DIR, LiveServer
from tests.integration.conftest import AgentServer

pytestmark = pytest.mark.asyncio


async def test_stt_plugin_with_its_defaults(live_server: LiveServer) -> None:
    stt = lk_openai.STT(base_url=live_server.url + "/v1", api_key="unused")
    assert stt.model == "gpt-4o-mini-transcribe" and not stt.capabilities.streaming
    with wave.open(str(SPEECH_DIR / "arctic_a0009.wav")) as w:
        pcm = w.readframes(w.getnframes())
        rate = w.getframerate()
    frame = rtc.AudioFrame(pcm, rate, 1, len(pcm) // 2)
    event = await stt.recognize(buffer=frame)
    assert "faced gregson" in event.alternatives[0].text.lower()
    await stt.aclose()


async def test_tts_plugin_with_its_defaults_streams_sse(live_server: LiveServer) -> None:
    tts = lk_openai.TTS(base_url=live_server.url + "/v1", api_key="unused")
    assert tts.model == "gpt-4o-mini-tts"  # the model that makes the plugin ask for SSE
    metrics: list[TTSMetrics] = []
    tts.on("metrics_collected", metrics.append)
    async with tts.synthesize("The blue boat sails at noon.") as stream:
        frames = [ev.frame async for ev in stream]
    assert frames and all(f.sample_rate == 24000 and f.num_channels == 1 for f in frames)
    pcm = b"".join(bytes(f.data) for f in frames)
    assert 1.0 < len(pcm) / 2 / 24000 < 6.0
    # speech.audio.done's usage reached the plugin's metrics.
    assert metrics and metrics[-1].input_tokens > 0 and metrics[-1].output_tokens > 0
    # The SSE deltas carried mp3 the plugin decoded: the audio says the sentence.
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24000)
        w.writeframes(pcm)
    heard = httpx.post(live_server.url + "/v1/audio/transcriptions", timeout=60,
                       files={"file": ("tts.wav", buf.getvalue(), "audio/wav")}).json()["text"]
    assert "blue boat" in heard.lower()
    await tts.aclose()


async def test_realtime_generate_reply_after_a_typed_message(live_server: LiveServer) -> None:
    """The plugin's RealtimeModel session, as an AgentSession drives it: the chat context goes in as
    conversation items, generate_reply() waits for response.created to echo its metadata (it timed
    out after 10 s), and the reply lands in the session's copy of the history."""
    model = lk_openai.realtime.RealtimeModel(base_url=live_server.url + "/v1", api_key="unused")
    session = model.session()
    errors: list[object] = []
    session.on("error", errors.append)
    try:
        ctx = llm.ChatContext.empty()
        ctx.add_message(role="user", content="What time does the library open?")
        await asyncio.wait_for(session.update_chat_ctx(ctx), 10)
        generation = await asyncio.wait_for(session.generate_reply(instructions="Answer briefly."), 15)
        assert generation.user_initiated and generation.response_id
        replies = []
        async for message in generation.message_stream:
            text = "".join([t async for t in message.text_stream])
            frames = [f async for f in message.audio_stream]
            seconds = sum(f.samples_per_channel / f.sample_rate for f in frames)
            replies.append((text, seconds))
        assert len(replies) == 1
        text, seconds = replies[0]
        assert "library open" in text.lower() and seconds > 0.5  # the echo responder read the item
        for _ in range(50):  # conversation.item.done, which fills the history, may come just after
            history = [(i.role, i.text_content) for i in session.chat_ctx.items if i.type == "message"]
            if len(history) == 2:
                break
            await asyncio.sleep(0.1)
        assert history[0] == ("user", "What time does the library open?")
        assert history[-1][0] == "assistant" and "library open" in (history[-1][1] or "").lower()
        assert not errors, errors
    finally:
        await session.aclose()
        await model.aclose()


async def test_agent_session_run_as_livekit_tests_write_it(live_server: LiveServer) -> None:
    """livekit's own testing API: an AgentSession on the realtime model with no room, one typed
    turn through session.run() (it waits on response.created's metadata too), checked with expect."""
    model = lk_openai.realtime.RealtimeModel(base_url=live_server.url + "/v1", api_key="unused")
    try:
        async with AgentSession(llm=model) as session:
            await session.start(Agent(instructions="You are a helpful librarian."))
            result = await asyncio.wait_for(session.run(user_input="When does the library open?"), 20)
            reply = result.expect.next_event().is_message(role="assistant")
            assert "library open" in (reply.event().item.text_content or "").lower()
            result.expect.no_more_events()
    finally:
        await model.aclose()


async def test_agent_session_runs_a_function_tool(agent_server: AgentServer) -> None:
    """A @function_tool on the agent: the LLM responder's call reaches it, livekit sends the output
    back and the answer is built from it; the run shows call, output, message, nothing else."""
    asked: list[str] = []

    @function_tool
    async def get_weather(city: str) -> str:
        """The weather now in a city."""
        asked.append(city)
        return f"sunny in {city}"

    model = lk_openai.realtime.RealtimeModel(base_url=agent_server.url + "/v1", api_key="unused")
    try:
        async with AgentSession(llm=model) as session:
            await session.start(Agent(instructions="Answer briefly.", tools=[get_weather]))
            result = await asyncio.wait_for(session.run(user_input="What is the weather in Oslo?"), 30)
            result.expect.next_event().is_function_call(name="get_weather", arguments={"city": "Oslo"})
            result.expect.next_event().is_function_call_output(output="sunny in Oslo")
            reply = result.expect.next_event().is_message(role="assistant")
            assert "sunny in oslo" in (reply.event().item.text_content or "").lower()
            result.expect.no_more_events()
    finally:
        await model.aclose()
    assert asked == ["Oslo"]
