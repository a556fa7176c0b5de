"""Helpers for integration tests: audio fixtures and a raw realtime socket."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import numpy as np
import soxr
import websockets

from kombain.clients.realtime_client import read_wav
from kombain.streaming.audio import mulaw_encode


def clip_pcm16(path: Any, rate: int, silence_s: float = 1.5) -> bytes:
    audio, src = read_wav(path)
    audio = np.concatenate([np.zeros(int(0.3 * src), np.float32), audio, np.zeros(int(silence_s * src), np.float32)])
    out = soxr.resample(audio, src, rate) if rate != src else audio
    return (np.clip(out, -1, 1) * 32767).astype("<i2").tobytes()


def clip_mulaw(path: Any, silence_s: float = 1.5) -> bytes:
    pcm = np.frombuffer(clip_pcm16(path, 8000, silence_s), "<i2")
    return mulaw_encode(pcm)


class RawSession:
    """A realtime WebSocket with an event inbox, for protocol-level tests."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.times: list[float] = []  # monotonic receive time of each event
        self._new = asyncio.Event()
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            async for msg in self.ws:
                self.events.append(json.loads(msg))
                self.times.append(time.monotonic())
                self._new.set()
        except websockets.ConnectionClosed:
            pass
        self._new.set()

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    async def append(self, pcm: bytes, chunk: int, speed: float, rate: int, binary: bool = False) -> None:
        """Send audio in chunks, paced at `speed` x real time."""
        bytes_per_s = rate * 2
        for i in range(0, len(pcm), chunk):
            part = pcm[i : i + chunk]
            if binary:
                await self.ws.send(part)
            else:
                await self.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(part).decode()})
            await asyncio.sleep(len(part) / bytes_per_s / speed)

    async def wait_for(self, type_: str, count: int = 1, timeout: float = 20) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while True:
                found = [e for e in self.events if e["type"] == type_]
                if len(found) >= count:
                    return found
                if self._task.done():
                    raise AssertionError(f"socket closed before {count} {type_}; got {[e['type'] for e in self.events]}")
                self._new.clear()
                await self._new.wait()

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == type_]

    async def close(self) -> None:
        await self.ws.close()
        self._task.cancel()


async def open_session(ws_url: str, **session: Any) -> RawSession:
    ws = await websockets.connect(ws_url + "/v1/realtime", max_size=2**24)
    s = RawSession(ws)
    await s.wait_for("session.created")
    if session:
        await s.send({"type": "session.update", "session": session})
        await s.wait_for("session.updated")
    return s
