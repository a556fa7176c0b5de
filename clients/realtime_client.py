"""A small realtime WebSocket client: stream a WAV file at 1x and collect timed server events."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soxr
import websockets


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples and rate of a 16-bit PCM WAV (channels are averaged)."""
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
        if w.getnchannels() > 1:
            data = data.reshape(-1, w.getnchannels()).mean(axis=1)
        return data, w.getframerate()


@dataclass
class TimedEvent:
    t: float  # seconds since the stream started (client clock)
    event: dict[str, Any]


@dataclass
class StreamResult:
    events: list[TimedEvent] = field(default_factory=list)
    audio_seconds: float = 0.0

    def of(self, type_: str) -> list[TimedEvent]:
        return [e for e in self.events if e.event.get("type") == type_]

    @property
    def finals(self) -> list[str]:
        return [e.event["transcript"] for e in self.of("conversation.item.input_audio_transcription.completed")]


async def stream_file(url: str, path: str | Path, **kwargs: Any) -> StreamResult:
    """Stream a WAV file over /v1/realtime in real time; see `stream_audio`."""
    audio, rate = read_wav(path)
    return await stream_audio(url, audio, rate, **kwargs)


async def stream_audio(
    url: str,
    audio: np.ndarray,
    src_rate: int,
    *,
    rate: int = 24000,
    speed: float = 1.0,
    chunk_ms: int = 20,
    trailing_silence_s: float = 1.5,
    binary: bool = False,
    api_key: str | None = None,
    on_event: Callable[[TimedEvent], None] | None = None,
    settle_s: float = 3.0,
) -> StreamResult:
    """Stream float32 audio over /v1/realtime as PCM16 at `rate`, in real time (`speed` 1.0), and
    wait for the transcripts of every turn (up to `settle_s` after the audio ends).

    Event times are client-clock seconds since the first chunk was sent; chunk n is sent at
    n * chunk_ms / speed, so an audio position maps back to the moment it left the client."""
    audio = np.concatenate([audio, np.zeros(int(trailing_silence_s * src_rate), np.float32)])
    pcm = (np.clip(soxr.resample(audio, src_rate, rate), -1, 1) * 32767).astype("<i2").tobytes()
    result = StreamResult(audio_seconds=len(audio) / src_rate)
    ws_url = url.rstrip("/").replace("http://", "ws://").replace("https://", "wss://") + "/v1/realtime"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    async with websockets.connect(ws_url, additional_headers=headers, max_size=2**24) as ws:
        t0 = time.monotonic()
        pending_turns = 0
        done = asyncio.Event()

        async def receive() -> None:
            nonlocal pending_turns
            async for msg in ws:
                ev = TimedEvent(time.monotonic() - t0, json.loads(msg))
                result.events.append(ev)
                if on_event:
                    on_event(ev)
                etype = ev.event["type"]
                if etype == "input_audio_buffer.committed":
                    pending_turns += 1
                elif etype.startswith("conversation.item.input_audio_transcription.") and etype.endswith(("completed", "failed")):
                    pending_turns -= 1
                    if pending_turns == 0 and sending_done:
                        done.set()

        sending_done = False
        receiver = asyncio.create_task(receive())
        await ws.send(json.dumps({"type": "session.update", "session": {
            "type": "transcription", "audio": {"input": {"format": {"type": "audio/pcm", "rate": rate}}}}}))
        step = rate * chunk_ms // 1000 * 2
        start = time.monotonic()
        for n, i in enumerate(range(0, len(pcm), step)):
            chunk = pcm[i : i + step]
            if binary:
                await ws.send(chunk)
            else:
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()}))
            # Pace by the audio clock, not by sleeps, so the stream does not drift.
            delay = start + (n + 1) * chunk_ms / 1000 / speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        sending_done = True
        if pending_turns == 0 and not any(e.event["type"] == "input_audio_buffer.speech_started" and
                                          not _closed(result, e.event["item_id"]) for e in result.events):
            done.set()
        try:
            await asyncio.wait_for(done.wait(), settle_s)
        except TimeoutError:
            pass
        receiver.cancel()
    return result


def _closed(result: StreamResult, item_id: str) -> bool:
    return any(e.event.get("item_id") == item_id and e.event["type"].endswith(("completed", "failed"))
               for e in result.events)
