"""pipecat's OpenAI services, as a pipecat app builds them, against a live kombain server.

Each service is built with pipecat's defaults (STT model `gpt-transcribe`, TTS model
`gpt-4o-mini-tts` with voice `alloy`, the realtime model of OpenAIRealtimeLLMService) and only
`base_url` pointing at kombain, and runs inside a real pipecat pipeline: STT and TTS under
pipecat's own test runner, the realtime service in the standard pipeline (context aggregators
around it) where a transport's output would be a recording sink. Only loopback is used.
"""

from __future__ import annotations

import asyncio
import io
import json
import wave

import httpx
import pytest
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMRunFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSTextFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import FunctionCallParams
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
from pipecat.services.openai.stt import OpenAISTTService
from pipecat.services.openai.tts import OpenAITTSService
from pipecat.tests.utils import run_test
from pipecat.workers.runner import WorkerRunner

from tests.conftest import SPEECH_DIR, LiveServer
from tests.integration.conftest import AgentServer

pytestmark = pytest.mark.asyncio

FRAME_MS = 20


def _pcm16(path: str, rate: int) -> bytes:
    with wave.open(str(SPEECH_DIR / path)) as w:
        assert w.getframerate() == rate and w.getnchannels() == 1 and w.getsampwidth() == 2
        return w.readframes(w.getnframes())


async def test_openai_stt_service_with_its_default_model(live_server: LiveServer) -> None:
    stt = OpenAISTTService(api_key="unused", base_url=live_server.url + "/v1")
    assert stt._settings.model == "gpt-transcribe"  # the default this test is about
    pcm = _pcm16("goforward.wav", 16000)
    step = 16000 * 2 * FRAME_MS // 1000
    audio = [InputAudioRawFrame(audio=pcm[i:i + step], sample_rate=16000, num_channels=1)
             for i in range(0, len(pcm), step)]
    # What a VAD in front of the service does: speech starts, the audio, speech stops.
    down, up = await run_test(
        stt,
        frames_to_send=[VADUserStartedSpeakingFrame(), *audio, VADUserStoppedSpeakingFrame()],
        pipeline_params=PipelineParams(audio_in_sample_rate=16000),
        start_timeout=15,
    )
    assert not [f for f in (*down, *up) if isinstance(f, ErrorFrame)], up
    texts = [f.text for f in down if isinstance(f, TranscriptionFrame)]
    assert len(texts) == 1, down
    assert "go forward" in texts[0].lower() and "meters" in texts[0].lower()


async def test_openai_tts_service_with_its_default_model(live_server: LiveServer) -> None:
    tts = OpenAITTSService(api_key="unused", base_url=live_server.url + "/v1")
    assert tts._settings.model == "gpt-4o-mini-tts" and tts._settings.voice == "alloy"
    down, up = await run_test(
        tts,
        frames_to_send=[TTSSpeakFrame("Turn left at the third light.")],
        pipeline_params=PipelineParams(audio_out_sample_rate=24000),
        start_timeout=15,
    )
    assert not [f for f in (*down, *up) if isinstance(f, ErrorFrame)], up
    chunks = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert chunks and all(f.sample_rate == 24000 and f.num_channels == 1 for f in chunks)
    pcm = b"".join(f.audio for f in chunks)
    assert 1.0 < len(pcm) / 2 / 24000 < 6.0
    # What pipecat played is the sentence: kombain's own transcription hears it back.
    heard = httpx.post(live_server.url + "/v1/audio/transcriptions", timeout=60,
                       files={"file": ("tts.wav", _wav(pcm, 24000), "audio/wav")}).json()["text"]
    assert "third light" in heard.lower()


def _wav(pcm: bytes, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


class _Sink(FrameProcessor):
    """Where a transport's output would sit: records what the service sends downstream."""

    def __init__(self, responses: int) -> None:
        super().__init__()
        self.frames: list[Frame] = []
        self._responses = responses
        self.responses_ended = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            self.frames.append(frame)
            ends = sum(isinstance(f, LLMFullResponseEndFrame) for f in self.frames)
            if ends >= self._responses:
                self.responses_ended.set()
        await self.push_frame(frame, direction)


async def _run_realtime(llm: OpenAIRealtimeLLMService, context: LLMContext, responses: int = 1) -> _Sink:
    """The standard realtime pipeline (user aggregator, the service, the output, the assistant
    aggregator) with LLMRunFrame queued, as an app does when its client connects; it ends after
    `responses` responses. Any error frame fails the test."""
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(context)
    sink = _Sink(responses)
    worker = PipelineWorker(Pipeline([user_aggregator, llm, sink, assistant_aggregator]),
                            params=PipelineParams(audio_out_sample_rate=24000))
    errors: list[Frame] = []

    @worker.event_handler("on_pipeline_error")
    async def _on_error(_worker: PipelineWorker, frame: Frame) -> None:
        errors.append(frame)

    async def drive() -> None:
        await worker.queue_frames([LLMRunFrame()])
        await asyncio.wait_for(sink.responses_ended.wait(), 30)
        await worker.queue_frame(EndFrame())

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.wait_for(asyncio.gather(runner.run(), drive()), 60)
    assert not errors and not [f for f in sink.frames if isinstance(f, ErrorFrame)], errors
    return sink


async def test_realtime_pipeline_with_a_user_message_in_the_initial_context(live_server: LiveServer) -> None:
    """pipecat's standard OpenAI Realtime pipeline: its setup sends the context's messages as
    conversation.item.create, then response.create (was refused, and fatal to the pipeline)."""
    llm = OpenAIRealtimeLLMService(api_key="unused", base_url=live_server.ws_url + "/v1/realtime")
    context = LLMContext([{"role": "user", "content": "Say hello to the tester."}])
    sink = await _run_realtime(llm, context)
    assert any(isinstance(f, LLMFullResponseStartFrame) for f in sink.frames)
    spoken = "".join(f.text for f in sink.frames if isinstance(f, TTSTextFrame))
    assert "say hello to the tester" in spoken.lower()  # the echo responder read the typed item
    audio = [f for f in sink.frames if isinstance(f, TTSAudioRawFrame)]
    assert audio and sum(len(f.audio) for f in audio) / 2 / 24000 > 0.5
    # The assistant aggregator wrote the reply into the app's context after the user message.
    messages = context.get_messages()
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert "say hello to the tester" in str(messages[1]["content"]).lower()


async def test_realtime_pipeline_runs_a_registered_function(agent_server: AgentServer) -> None:
    """A function the app registers with pipecat: the LLM responder's tool call reaches the
    handler, pipecat sends its result as a function_call_output item and asks for the answer."""
    asked: list[str] = []

    async def get_weather(params: FunctionCallParams) -> None:
        asked.append(params.arguments["city"])
        await params.result_callback(f"sunny in {params.arguments['city']}")

    weather = FunctionSchema(name="get_weather", description="The weather now in a city.",
                             properties={"city": {"type": "string"}}, required=["city"])
    llm = OpenAIRealtimeLLMService(api_key="unused", base_url=agent_server.ws_url + "/v1/realtime")
    llm.register_function("get_weather", get_weather)
    context = LLMContext([{"role": "user", "content": "What is the weather in Oslo?"}],
                         tools=ToolsSchema(standard_tools=[weather]))
    sink = await _run_realtime(llm, context, responses=2)  # the call, then the answer
    assert asked == ["Oslo"]
    spoken = "".join(f.text for f in sink.frames if isinstance(f, TTSTextFrame))
    assert "the tool said" in spoken.lower() and "sunny in oslo" in spoken.lower()
    sent = agent_server.chat.state.requests[-1]["messages"]
    assert sent[-1]["role"] == "tool" and json.loads(sent[-1]["content"]) == "sunny in Oslo"  # pipecat sends JSON
