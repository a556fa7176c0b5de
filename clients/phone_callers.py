"""Test callers that behave as Twilio Media Streams and Asterisk chan_websocket do.

Written from the public protocol descriptions, independently of the server's parsers: each one
streams 8 kHz audio in 20 ms frames at real time (silence between and after words, as phone
networks do), plays back what it receives on a simulated clock, echoes marks once the audio
before them has "played", honours clear/FLUSH_MEDIA/PAUSE_MEDIA, and records what it heard.
Used by the integration tests and `python -m kombain.loadtest conversation --transport twilio`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
import uuid as uuid_mod
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import websockets

RATE = 8000
FRAME = RATE // 50  # 20 ms


def _mulaw_encode(pcm: np.ndarray) -> bytes:
    """G.711 mu-law, straight from the ITU-T formula (not the server's tables)."""
    x = np.clip(pcm.astype(np.int32), -32635, 32635)
    sign = np.where(x < 0, 0x80, 0)
    x = np.abs(x) + 0x84
    exp = np.floor(np.log2(x)).astype(np.int32) - 7
    exp = np.clip(exp, 0, 7)
    mant = (x >> (exp + 3)) & 0x0F
    return (~(sign | (exp << 4) | mant) & 0xFF).astype(np.uint8).tobytes()


def _mulaw_decode(data: bytes) -> np.ndarray:
    u = ~np.frombuffer(data, np.uint8).astype(np.int32) & 0xFF
    sign, exp, mant = u & 0x80, (u >> 4) & 0x07, u & 0x0F
    mag = ((mant << 3) + 0x84) << exp
    return np.where(sign != 0, 0x84 - mag, mag - 0x84).astype(np.int16)


@dataclass
class Heard:
    """What a caller received, on its own clock."""

    audio: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (receive time, int16 8 kHz)
    clears: list[float] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)
    commands: list[tuple[float, str]] = field(default_factory=list)
    closed_at: float | None = None
    close_code: int | None = None
    close_reason: str = ""

    def pcm(self, since: float = 0.0) -> np.ndarray:
        parts = [a for t, a in self.audio if t >= since]
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)

    def first_audio_after(self, t: float) -> float | None:
        return next((at for at, a in self.audio if at >= t and np.abs(a).max(initial=0) > 300), None)

    def last_audio_before(self, t: float) -> float | None:
        times = [at for at, a in self.audio if at <= t and np.abs(a).max(initial=0) > 300]
        return times[-1] if times else None


class _Playback:
    """The caller's speaker: audio plays at real time; marks fire once what precedes them has played."""

    def __init__(self) -> None:
        self.play_end = 0.0
        self.marks: deque[tuple[float, str]] = deque()
        self.paused_at: float | None = None

    def add_audio(self, samples: int, now: float, rate: int = RATE) -> None:
        self.play_end = max(self.play_end, now) + samples / rate

    def add_mark(self, name: str, now: float) -> None:
        self.marks.append((max(self.play_end, now), name))

    def due(self, now: float) -> list[str]:
        out = []
        while self.marks and self.marks[0][0] <= now and self.paused_at is None:
            out.append(self.marks.popleft()[1])
        return out

    def clear(self, now: float) -> list[str]:
        self.play_end = now
        names = [n for _, n in self.marks]
        self.marks.clear()
        return names


class PhoneCaller:
    """Common to both callers: a paced 20 ms sender of queued audio (silence when idle)."""

    def __init__(self, url: str, rate: int = RATE) -> None:
        self.url = url
        self.rate = rate
        self.frame = rate // 50
        self.heard = Heard()
        self.playback = _Playback()
        self._queue: deque[np.ndarray] = deque()  # int16 frames of 160 samples to send
        self.ws: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self.voice_sent: list[tuple[float, float]] = []  # (first, last) send time of each say()
        self._say_done: asyncio.Event = asyncio.Event()
        self.closed = asyncio.Event()

    def say(self, pcm8k: np.ndarray) -> None:
        """Queue int16 speech at the caller's rate; it is sent in real time after what is queued."""
        pad = (-len(pcm8k)) % self.frame
        pcm = np.concatenate([pcm8k.astype(np.int16), np.zeros(pad, np.int16)])
        for i in range(0, len(pcm), self.frame):
            self._queue.append(pcm[i:i + self.frame])
        self._queue.append(np.full(1, -1, np.int16))  # marker: end of this utterance
        self._say_done.clear()

    async def wait_said(self, timeout_s: float = 120) -> None:
        async with asyncio.timeout(timeout_s):
            while self._queue:
                self._say_done.clear()
                await self._say_done.wait()

    async def _sender(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed, ConnectionError):  # the server hung up
            await self._send_loop()

    async def _send_loop(self) -> None:
        start = time.monotonic()
        n = 0
        first: float | None = None
        while True:
            frame = np.zeros(self.frame, np.int16)
            while self._queue and len(self._queue[0]) == 1:  # utterance markers
                self._queue.popleft()
                if first is not None:
                    self.voice_sent.append((first, time.monotonic()))
                    first = None
                self._say_done.set()
            if self._queue:
                frame = self._queue.popleft()
                if first is None:
                    first = time.monotonic()
            await self._send_audio(frame)
            n += 1
            for name in self.playback.due(time.monotonic()):
                await self._echo_mark(name)
            wait = start + n * 0.02 - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)

    async def _receiver(self) -> None:
        try:
            async for msg in self.ws:
                await self._on_message(msg, time.monotonic())
        except websockets.ConnectionClosed:
            pass
        finally:
            self.heard.closed_at = time.monotonic()
            if self.ws.close_code is not None:
                self.heard.close_code = self.ws.close_code
                self.heard.close_reason = self.ws.close_reason or ""
            self.closed.set()

    async def _start_tasks(self) -> None:
        self._tasks = [asyncio.create_task(self._sender()), asyncio.create_task(self._receiver())]

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            await self.ws.close()

    async def _send_audio(self, frame: np.ndarray) -> None:
        raise NotImplementedError

    async def _echo_mark(self, name: str) -> None:
        raise NotImplementedError

    async def _on_message(self, msg: str | bytes, now: float) -> None:
        raise NotImplementedError


class TwilioCaller(PhoneCaller):
    """A Twilio Media Streams peer: connected, start, media every 20 ms, dtmf, mark echoes, stop."""

    def __init__(self, url: str, parameters: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(url)
        self.parameters = parameters or {}
        self.headers = headers or {}
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.call_sid = "CA" + secrets.token_hex(16)
        self._chunk = 0
        self._seq = 0

    async def connect(self) -> None:
        self.ws = await websockets.connect(self.url, additional_headers=self.headers, max_size=2**22)
        await self._json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self._json({"event": "start", "streamSid": self.stream_sid, "start": {
            "accountSid": "AC" + "0" * 32, "streamSid": self.stream_sid, "callSid": self.call_sid,
            "tracks": ["inbound"], "customParameters": self.parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
        await self._start_tasks()

    async def _json(self, message: dict[str, Any]) -> None:
        self._seq += 1
        message["sequenceNumber"] = str(self._seq)
        await self.ws.send(json.dumps(message))

    async def _send_audio(self, frame: np.ndarray) -> None:
        self._chunk += 1
        await self._json({"event": "media", "streamSid": self.stream_sid, "media": {
            "track": "inbound", "chunk": str(self._chunk), "timestamp": str(self._chunk * 20),
            "payload": base64.b64encode(_mulaw_encode(frame)).decode()}})

    async def _echo_mark(self, name: str) -> None:
        self.heard.marks.append((time.monotonic(), name))
        await self._json({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def dtmf(self, digit: str) -> None:
        await self._json({"event": "dtmf", "streamSid": self.stream_sid,
                          "dtmf": {"track": "inbound_track", "digit": digit}})

    async def stop(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._json({"event": "stop", "streamSid": self.stream_sid,
                              "stop": {"accountSid": "AC" + "0" * 32, "callSid": self.call_sid}})
        await self.close()

    async def _on_message(self, msg: str | bytes, now: float) -> None:
        m = json.loads(msg)
        event = m.get("event")
        if event == "media":
            pcm = _mulaw_decode(base64.b64decode(m["media"]["payload"]))
            self.heard.audio.append((now, pcm))
            self.playback.add_audio(len(pcm), now)
        elif event == "mark":
            self.playback.add_mark(m["mark"]["name"], now)
        elif event == "clear":
            self.heard.clears.append(now)
            for name in self.playback.clear(now):  # Twilio echoes the marks a clear dropped
                await self._echo_mark(name)


class AsteriskCaller(PhoneCaller):
    """An Asterisk chan_websocket peer (ulaw, plain-text control): MEDIA_START, media, DTMF_END."""

    def __init__(self, url: str, json_control: bool = False) -> None:
        super().__init__(url)
        self.json_control = json_control
        self.paused = False
        self.hangup = asyncio.Event()

    async def connect(self) -> None:
        self.ws = await websockets.connect(self.url, subprotocols=["media"], max_size=2**22)  # type: ignore[list-item]
        cid = secrets.token_hex(8)
        if self.json_control:
            await self.ws.send(json.dumps({"event": "MEDIA_START", "connection_id": cid, "channel": "PJSIP/test-00000001",
                                           "channel_id": "1700000000.1", "format": "ulaw", "optimal_frame_size": 160,
                                           "ptime": 20, "channel_variables": {}}))
        else:
            await self.ws.send(f"MEDIA_START connection_id:{cid} channel:PJSIP/test-00000001 "
                               "channel_id:1700000000.1 format:ulaw optimal_frame_size:160 ptime:20")
        await self._start_tasks()

    async def _send_audio(self, frame: np.ndarray) -> None:
        await self.ws.send(_mulaw_encode(frame))

    async def _echo_mark(self, name: str) -> None:
        self.heard.marks.append((time.monotonic(), name))
        if self.json_control:
            await self.ws.send(json.dumps({"event": "MEDIA_MARK_PROCESSED", "correlation_id": name,
                                           "channel_id": "1700000000.1"}))
        else:
            await self.ws.send(f"MEDIA_MARK_PROCESSED {name}")

    async def dtmf(self, digit: str) -> None:
        if self.json_control:
            await self.ws.send(json.dumps({"event": "DTMF_END", "digit": digit, "channel_id": "1700000000.1"}))
        else:
            await self.ws.send(f"DTMF_END digit:{digit} channel_id:1700000000.1")

    async def stop(self) -> None:
        await self.close()  # Asterisk hangs up by closing the socket

    async def _on_message(self, msg: str | bytes, now: float) -> None:
        if isinstance(msg, bytes):
            pcm = _mulaw_decode(msg)
            self.heard.audio.append((now, pcm))
            self.playback.add_audio(len(pcm), now)
            return
        if msg.startswith("{"):
            m = json.loads(msg)
            word, arg = m.get("command", ""), m.get("correlation_id", "")
        else:
            word, _, arg = msg.partition(" ")
        self.heard.commands.append((now, word))
        if word == "MARK_MEDIA":
            self.playback.add_mark(arg.strip(), now)
        elif word == "FLUSH_MEDIA":
            self.heard.clears.append(now)
            self.playback.clear(now)  # marks of flushed media are not reported
            self.playback.paused_at = None
        elif word == "PAUSE_MEDIA":
            self.playback.paused_at = now
        elif word == "CONTINUE_MEDIA":
            if self.playback.paused_at is not None:
                self.playback.play_end += now - self.playback.paused_at
                self.playback.marks = deque((t + now - self.playback.paused_at, n) for t, n in self.playback.marks)
            self.playback.paused_at = None
        elif word == "HANGUP":
            self.hangup.set()


class AudioSocketCaller(PhoneCaller):
    """An Asterisk AudioSocket peer over TCP: UUID, 20 ms slin frames at its rate, DTMF, hang-up."""

    KINDS = {8000: 0x10, 12000: 0x11, 16000: 0x12, 24000: 0x13, 32000: 0x14, 44100: 0x15, 48000: 0x16,
             96000: 0x17, 192000: 0x18}

    def __init__(self, host: str, port: int, *, rate: int = RATE, call_uuid: str | None = None) -> None:
        super().__init__(f"tcp://{host}:{port}", rate)
        self.host, self.port = host, port
        self.uuid = call_uuid or str(uuid_mod.uuid4())
        self.hangup = asyncio.Event()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._writer.write(b"\x01\x00\x10" + uuid_mod.UUID(self.uuid).bytes)
        await self._start_tasks()

    def _frame(self, kind: int, payload: bytes) -> bytes:
        return bytes([kind]) + len(payload).to_bytes(2, "big") + payload

    async def _send_audio(self, frame: np.ndarray) -> None:
        assert self._writer is not None
        if self._writer.is_closing():
            raise websockets.ConnectionClosed(None, None)
        self._writer.write(self._frame(self.KINDS[self.rate], frame.astype("<i2").tobytes()))
        await self._writer.drain()

    async def _echo_mark(self, name: str) -> None:
        pass  # AudioSocket has no marks

    async def dtmf(self, digit: str) -> None:
        assert self._writer is not None
        self._writer.write(self._frame(0x03, digit.encode()))

    async def stop(self) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(b"\x00\x00\x00")
        await self.close()

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self._writer is not None:
            self._writer.close()

    async def _receiver(self) -> None:
        assert self._reader is not None
        rates = {v: k for k, v in self.KINDS.items()}
        try:
            while True:
                head = await self._reader.readexactly(3)
                kind, length = head[0], int.from_bytes(head[1:3], "big")
                payload = await self._reader.readexactly(length) if length else b""
                now = time.monotonic()
                if kind in rates:
                    pcm = np.frombuffer(payload, "<i2").copy()
                    self.heard.audio.append((now, pcm))
                    self.playback.add_audio(len(pcm), now, rates[kind])
                elif kind == 0x00:
                    self.hangup.set()
                    self.heard.commands.append((now, "HANGUP"))
                elif kind == 0xFF:
                    self.heard.commands.append((now, f"ERROR {payload.hex()}"))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.heard.closed_at = time.monotonic()
            self.closed.set()
