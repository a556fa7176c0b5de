"""`python -m loadtest conversation`: N concurrent callers talk to the echo bot and interrupt it.

Each caller keeps one realtime WebSocket open and streams a continuous 'microphone' at 1x: the
recorded clips one by one, silence in between. After each reply it waits for the reply to end
and speaks the next clip; every `interrupt_every`-th reply is interrupted ~0.8 s into its audio.

Stages (client clocks unless noted; the mic is paced by the clock, so an audio position maps
to the moment it was sent):
  stt_final        speech_stopped received -> final transcript received
  turn             last voiced sample sent (server VAD's audio_end_ms) -> first reply audio received
  tts_first_audio  server-reported: reply text available -> first reply audio sent
  barge_in         first voiced sample of the interruption sent -> last audio of the cut reply received
                   (0 when no reply audio arrived after it)
  barge_in_server  server-reported: that sample's arrival -> reply output held
and the parts of `turn` the server reports (silence_wait, stt, responder, tts).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import soxr
import websockets

from kombain.clients.realtime_client import read_wav
from kombain.loadtest.stats import summary

CHUNK_MS = 20
RATE = 24000


def load_clips(audio_dir: Path) -> list[bytes]:
    rows = (audio_dir / "transcripts.tsv").read_text().strip().splitlines()[1:]
    clips = []
    for name in (r.split("\t", 1)[0] for r in rows):
        audio, rate = read_wav(audio_dir / name)
        pcm = soxr.resample(audio, rate, RATE)
        clips.append((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())
    return clips


class Caller:
    def __init__(self, url: str, clips: list[bytes], interrupt_every: int, rounds: int) -> None:
        self.url = url.rstrip("/").replace("http://", "ws://") + "/v1/realtime"
        self.clips, self.interrupt_every, self.rounds = clips, interrupt_every, rounds
        self.mic: deque[bytes] = deque()
        self.t0 = 0.0
        self.samples: dict[str, list[float]] = {k: [] for k in (
            "stt_final", "turn", "tts_first_audio", "barge_in", "barge_in_server", "silence_wait", "stt", "responder",
            "tts")}
        self.errors: list[str] = []
        self.responses = {"completed": 0, "cancelled": 0, "other": 0}

    def sent_at(self, audio_ms: float) -> float:
        return self.t0 + audio_ms / 1000

    async def run(self) -> None:
        async with websockets.connect(self.url, max_size=2**24) as ws:
            await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime"}}))
            self.t0 = time.monotonic()
            sender = asyncio.create_task(self._send_mic(ws))
            try:
                await self._converse(ws)
            finally:
                sender.cancel()

    async def _send_mic(self, ws: Any) -> None:
        step = RATE * CHUNK_MS // 1000 * 2
        silence = bytes(step)
        n = 0
        while True:
            chunk = self.mic.popleft() if self.mic else silence
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()}))
            n += 1
            delay = self.t0 + n * CHUNK_MS / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    def _speak(self, pcm: bytes) -> None:
        step = RATE * CHUNK_MS // 1000 * 2
        self.mic.extend(pcm[i : i + step].ljust(step, b"\0") for i in range(0, len(pcm), step))

    async def _converse(self, ws: Any) -> None:
        stops: dict[str, float] = {}
        speech_end: dict[str, float] = {}  # user item -> sent time of its last voiced sample
        last_user_end: float | None = None
        first_audio: dict[str, float] = {}
        last_audio: dict[str, float] = {}
        interrupt_onset: float | None = None
        turn_no = 0
        plan = [c for _ in range(self.rounds) for c in self.clips]
        self._speak(plan.pop(0))
        pending_interrupt: str | None = None
        async with asyncio.timeout(60 + 20 * len(plan)):
            async for msg in ws:
                e = json.loads(msg)
                now = time.monotonic()
                t = e["type"]
                if t == "error":
                    self.errors.append(e["error"]["message"])
                elif t == "input_audio_buffer.speech_started":
                    if pending_interrupt is not None:
                        interrupt_onset = self.sent_at(e["audio_start_ms"])
                elif t == "input_audio_buffer.speech_stopped":
                    stops[e["item_id"]] = now
                    speech_end[e["item_id"]] = last_user_end = self.sent_at(e["audio_end_ms"])
                elif t == "conversation.item.input_audio_transcription.completed" and e["item_id"] in stops:
                    self.samples["stt_final"].append(now - stops[e["item_id"]])
                    if not e["transcript"].strip() and pending_interrupt is None:
                        last_user_end = None  # nothing to answer: the bot stays silent, so go on
                        if not plan:
                            return
                        self._speak(plan.pop(0))
                elif t == "response.output_audio.delta":
                    rid = e["response_id"]
                    if rid not in first_audio:
                        first_audio[rid] = now
                        if last_user_end is not None:
                            self.samples["turn"].append(now - last_user_end)
                            last_user_end = None
                        turn_no += 1
                        if plan and self.interrupt_every and turn_no % self.interrupt_every == 0:
                            pending_interrupt = rid
                            asyncio.get_running_loop().call_later(0.8, self._speak, plan.pop(0))
                    last_audio[rid] = now
                elif t == "response.done":
                    r = e["response"]
                    self.responses[r["status"] if r["status"] in self.responses else "other"] += 1
                    timings = (r.get("kombain") or {}).get("timings_ms", {})
                    for k in ("silence_wait", "stt", "responder", "tts"):
                        if k in timings:
                            self.samples[k].append(timings[k] / 1000)
                    if "barge_in" in timings:
                        self.samples["barge_in_server"].append(timings["barge_in"] / 1000)
                    if "tts" in timings:
                        self.samples["tts_first_audio"].append(timings["tts"] / 1000)
                    if r["id"] == pending_interrupt:
                        if r["status"] == "cancelled" and interrupt_onset is not None and r["id"] in last_audio:
                            self.samples["barge_in"].append(max(0.0, last_audio[r["id"]] - interrupt_onset))
                        pending_interrupt, interrupt_onset = None, None
                    elif r["status"] == "completed":
                        if not plan:
                            return
                        # Let the reply finish playing (it is paced ~0.5 s ahead), then speak again.
                        await asyncio.sleep(0.6 + random.uniform(0, 0.3))
                        self._speak(plan.pop(0))


async def run_conversation(url: str, sessions: int, audio_dir: Path, interrupt_every: int = 3,
                           rounds: int = 1, sampler: Any = None) -> dict[str, Any]:
    clips = load_clips(audio_dir)
    callers = [Caller(url, clips, interrupt_every, rounds) for _ in range(sessions)]

    async def start(c: Caller) -> None:
        await asyncio.sleep(random.uniform(0, 1.0) if sessions > 1 else 0)
        await c.run()

    sampling = asyncio.create_task(sampler.run()) if sampler else None
    results = await asyncio.gather(*(start(c) for c in callers), return_exceptions=True)
    if sampling:
        sampling.cancel()
    stages: dict[str, list[float]] = {k: [] for k in callers[0].samples}
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    responses = {"completed": 0, "cancelled": 0, "other": 0}
    for c in callers:
        for k, v in c.samples.items():
            stages[k] += v
        errors += c.errors
        for k, v in c.responses.items():
            responses[k] += v
    return {"sessions": sessions, "responses": responses, "stages": {k: summary(v) for k, v in stages.items()},
            "samples": stages, "errors": errors, "server": sampler.summary() if sampler else None}
