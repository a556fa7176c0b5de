"""A WebRTC caller (aiortc): a WAV file as the microphone, reply audio recorded, timed events.

`call()` places one call and returns a `CallResult`; `WebRTCCaller` gives step-by-step control
(speak on cue, send events, wait for one) for tests and load tests. Times are client-clock
seconds since the offer was sent.

aioice gathers no loopback candidates; on a host (or network namespace) with only 127.0.0.1 pass
`hosts=("127.0.0.1",)`. That swaps aioice's address lookup while the caller is set up, so with
many concurrent callers in one process enter `server.webrtc_ice.restrict_host_addresses` once
around all of them instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import wave
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import soxr
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from kombain.clients.realtime_client import TimedEvent, read_wav
from kombain.clients.server_url import default_server_url
from kombain.server.transports.webrtc.ice import restrict_host_addresses
from kombain.server.transports.webrtc.media import FRAME_SAMPLES as FRAME
from kombain.server.transports.webrtc.media import TRACK_RATE as RATE
from kombain.server.transports.webrtc.media import PacedAudioTrack


class FileMicrophone(PacedAudioTrack):
    """An audio track that plays whatever `play()` queued, at 1x, then silence."""

    def __init__(self) -> None:
        super().__init__()
        self._queue: deque[np.ndarray] = deque()
        self.played_s = 0.0

    def play(self, samples: np.ndarray, rate: int) -> float:
        """Queue float32 mono audio; returns its duration in seconds."""
        audio = soxr.resample(samples, rate, RATE) if rate != RATE else samples
        pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
        for i in range(0, len(pcm), FRAME):
            self._queue.append(pcm[i:i + FRAME])
        return len(pcm) / RATE

    @property
    def idle(self) -> bool:
        return not self._queue

    def _take(self, n: int) -> np.ndarray:
        out = np.zeros(n, np.int16)
        if self._queue:
            chunk = self._queue.popleft()
            out[:len(chunk)] = chunk
            self.played_s += n / RATE
        return out


@dataclass
class CallResult:
    """What one call saw: data channel events, reply audio (PCM16 mono) and set-up time."""

    events: list[TimedEvent] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    rate: int = RATE
    frame_times: list[float] = field(default_factory=list)  # receive time of each 20 ms frame
    setup_s: float | None = None  # offer sent -> connection state "connected"
    answer_s: float | None = None  # offer sent -> answer received
    call_id: str | None = None

    def of(self, type_: str) -> list[TimedEvent]:
        return [e for e in self.events if e.event.get("type") == type_]

    @property
    def finals(self) -> list[str]:
        return [e.event["transcript"] for e in self.of("conversation.item.input_audio_transcription.completed")]

    def samples(self) -> np.ndarray:
        return np.frombuffer(bytes(self.audio), np.int16).astype(np.float32) / 32768

    def frames_between(self, t0: float, t1: float) -> int:
        return sum(1 for t in self.frame_times if t0 <= t < t1)

    def rms_between(self, t0: float, t1: float) -> float:
        """RMS of the reply audio received between two client times (0.0 if none)."""
        s = self.samples()
        idx = [i for i, t in enumerate(self.frame_times) if t0 <= t < t1]
        if not idx:
            return 0.0
        chunk = np.concatenate([s[i * FRAME:(i + 1) * FRAME] for i in idx])
        return float(np.sqrt(np.mean(chunk ** 2))) if len(chunk) else 0.0

    def save_wav(self, path: str | Path) -> None:
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(self.rate)
            w.writeframes(bytes(self.audio))


class WebRTCCaller:
    """One call to a kombain server over WebRTC; `async with` hangs up on exit."""

    def __init__(self, url: str, *, api_key: str | None = None, hosts: tuple[str, ...] = (),
                 session: dict[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.hosts, self.session = hosts, session
        self.mic = FileMicrophone()
        self.pc = RTCPeerConnection()
        self.result = CallResult()
        self.location: str | None = None
        self._t0 = time.monotonic()
        self._new = asyncio.Event()
        self._connected = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.channel = self.pc.createDataChannel("oai-events")
        self.channel.on("message", self._on_message)
        self.pc.addTrack(self.mic)
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    def now(self) -> float:
        return time.monotonic() - self._t0

    async def connect(self, timeout: float = 20.0) -> None:  # noqa: ASYNC109
        """Offer, post, answer, and wait until ICE and DTLS are up."""
        async with asyncio.timeout(timeout):
            with restrict_host_addresses(self.hosts):
                await self.pc.setLocalDescription(await self.pc.createOffer())
            self._t0 = time.monotonic()
            async with httpx.AsyncClient(timeout=timeout) as http:
                if self.session is None:
                    resp = await http.post(self.url + "/v1/realtime/calls", content=self.pc.localDescription.sdp,
                                           headers={**self.headers, "Content-Type": "application/sdp"})
                else:
                    resp = await http.post(self.url + "/v1/realtime/calls", headers=self.headers,
                                           files={"sdp": (None, self.pc.localDescription.sdp),
                                                  "session": (None, json.dumps(self.session))})
            if resp.status_code != 201:
                raise RuntimeError(f"call refused: HTTP {resp.status_code}: {resp.text}")
            self.result.answer_s = self.now()
            self.location = resp.headers["location"]
            self.result.call_id = self.location.rsplit("/", 1)[-1]
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=resp.text, type="answer"))
            await self._connected.wait()

    def _on_state(self) -> None:
        if self.pc.connectionState == "connected" and self.result.setup_s is None:
            self.result.setup_s = self.now()
            self._connected.set()

    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, str):
            self.result.events.append(TimedEvent(self.now(), json.loads(message)))
            self._new.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        task = asyncio.create_task(self._record(track))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            for out in resampler.resample(frame):
                self.result.audio += out.to_ndarray().tobytes()
                for _ in range(max(1, out.samples // FRAME)):
                    self.result.frame_times.append(self.now())

    def speak(self, path: str | Path, lead_s: float = 0.3, trail_s: float = 1.5) -> float:
        """Queue a WAV file (with silence around it) on the microphone; returns its length in s."""
        audio, rate = read_wav(path)
        pad = np.zeros(int(lead_s * rate), np.float32), np.zeros(int(trail_s * rate), np.float32)
        return self.mic.play(np.concatenate([pad[0], audio, pad[1]]), rate)

    def send(self, event: dict[str, Any]) -> None:
        self.channel.send(json.dumps(event))

    async def wait_for(self, type_: str, count: int = 1, timeout: float = 30.0) -> list[TimedEvent]:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while len(found := self.result.of(type_)) < count:
                self._new.clear()
                await self._new.wait()
        return found

    async def close(self) -> None:
        if self.location is not None:
            with contextlib.suppress(httpx.HTTPError):
                async with httpx.AsyncClient(timeout=10) as http:
                    await http.delete(self.url + self.location, headers=self.headers)
        for task in list(self._tasks):
            task.cancel()
        await self.pc.close()

    async def __aenter__(self) -> WebRTCCaller:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def call(url: str, wav_path: str | Path, *, record_to: str | Path | None = None, timeout: float = 60.0,  # noqa: ASYNC109
               api_key: str | None = None, hosts: tuple[str, ...] = (), until: str = "response.done",
               settle_s: float = 0.5) -> CallResult:
    """Call, speak the WAV file at 1x, wait for `until` (the reply's end by default), hang up."""
    async with asyncio.timeout(timeout), WebRTCCaller(url, api_key=api_key, hosts=hosts) as caller:
        await caller.connect()
        caller.speak(wav_path)
        await caller.wait_for(until, timeout=timeout)
        await asyncio.sleep(settle_s)  # the last reply audio is still in flight
    if record_to is not None:
        caller.result.save_wav(record_to)
    return caller.result


def main() -> None:
    parser = argparse.ArgumentParser(description="Call a kombain server over WebRTC with a WAV file.")
    parser.add_argument("url", nargs="?", default=None,
                        help="server base URL (default: KOMBAIN_URL, else http://KOMBAIN_HOST:KOMBAIN_PORT, "
                             "else http://127.0.0.1:8000)")
    parser.add_argument("wav", help="16-bit PCM WAV to speak")
    parser.add_argument("--record", help="write the reply audio to this WAV")
    parser.add_argument("--hosts", default="", help="local ICE addresses, e.g. 127.0.0.1")
    parser.add_argument("--api-key")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()
    hosts = tuple(h for h in args.hosts.split(",") if h)
    result = asyncio.run(call(args.url or default_server_url(), args.wav, record_to=args.record, timeout=args.timeout,
                              api_key=args.api_key, hosts=hosts))
    print(json.dumps({"setup_s": result.setup_s, "finals": result.finals,
                      "reply_audio_s": len(result.audio) / 2 / result.rate,
                      "events": [[round(e.t, 3), e.event["type"]] for e in result.events]}, indent=1))


if __name__ == "__main__":
    main()
