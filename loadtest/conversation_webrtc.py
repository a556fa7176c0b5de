"""`python -m loadtest conversation --transport webrtc`: the conversation load over WebRTC.

Each caller places a WebRTC call (aiortc; Opus both ways), speaks the recorded clips one by one on
its microphone track at 1x, and listens to the reply track. Every `interrupt_every`-th reply is
interrupted 0.8 s after its audio starts. Reply audio is read from the track itself: a 20 ms frame
counts as speech when its RMS is above -46 dBFS. Stages:
  setup     offer sent -> connected
  turn      last voiced sample sent (server VAD's audio_end_ms on the mic clock) -> first reply speech received
  barge_in  first voiced sample of the interruption sent -> last reply speech received
plus stt_final and the server-reported turn parts from the data channel.
Runs inside a network namespace with only loopback (the caller re-executes itself under `unshare -n`).
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import numpy as np

from kombain.clients.realtime_client import read_wav
from kombain.clients.webrtc_client import FRAME, WebRTCCaller
from kombain.loadtest.stats import summary

_SPEECH_RMS = 0.005


def _speech_frames(caller: WebRTCCaller, after: float) -> list[float]:
    s = caller.result.samples()
    return [t for i, t in enumerate(caller.result.frame_times)
            if t >= after and i * FRAME < len(s)
            and float(np.sqrt(np.mean(s[i * FRAME:(i + 1) * FRAME] ** 2))) > _SPEECH_RMS]


async def _one(url: str, clips: list[tuple[np.ndarray, int]], interrupt_every: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in ("setup", "stt_final", "turn", "barge_in", "tts_first_audio")}

    def count(type_: str) -> int:
        return len(caller.result.of(type_))

    async with WebRTCCaller(url) as caller:
        await caller.connect()
        out["setup"].append(caller.result.setup_s or 0.0)
        i, replies = 0, 0
        while i < len(clips):
            audio, rate = clips[i]
            lead, trail = np.zeros(int(0.3 * rate), np.float32), np.zeros(int(1.2 * rate), np.float32)
            created_n = count("response.created")
            caller.mic.play(np.concatenate([lead, audio, trail]), rate)
            created_ev = (await caller.wait_for("response.created", count=created_n + 1, timeout=30))[-1]
            created, resp_id = created_ev.t, created_ev.event["response"]["id"]
            # The server's audio clock starts with the first microphone frame it receives.
            mic0 = (caller.mic._start or caller._t0) - caller._t0
            stop = caller.result.of("input_audio_buffer.speech_stopped")[-1]
            final = caller.result.of("conversation.item.input_audio_transcription.completed")[-1]
            out["stt_final"].append(final.t - stop.t)
            voiced_end = mic0 + stop.event["audio_end_ms"] / 1000
            replies += 1
            interrupt = interrupt_every and replies % interrupt_every == 0 and i + 1 < len(clips)
            if interrupt:
                await asyncio.sleep(0.8)
                starts_n = count("input_audio_buffer.speech_started")
                nxt, nrate = clips[i + 1]
                caller.mic.play(np.concatenate([lead[: int(0.3 * nrate)], nxt, trail]), nrate)
                started = (await caller.wait_for("input_audio_buffer.speech_started", count=starts_n + 1,
                                                 timeout=30))[-1]
                onset = mic0 + started.event["audio_start_ms"] / 1000
                nxt_created = (await caller.wait_for("response.created", count=created_n + 2, timeout=30))[-1].t
                i += 2
            else:
                i += 1
            done = [e for e in await caller.wait_for("response.done", count=count("response.created") - (1 if interrupt else 0), timeout=30)
                    if e.event["response"]["id"] == resp_id]
            speech = _speech_frames(caller, created)
            if speech:
                out["turn"].append(speech[0] - voiced_end)
            if interrupt and done and done[0].event["response"]["status"] == "cancelled":
                cut = [t for t in speech if t < nxt_created]
                out["barge_in"].append(max(0.0, cut[-1] - onset) if cut else 0.0)
            if done:
                timings = (done[0].event["response"].get("kombain") or {}).get("timings_ms", {})
                if "tts" in timings:
                    out["tts_first_audio"].append(timings["tts"] / 1000)
            if interrupt:  # wait for the reply to the interruption before speaking again
                await caller.wait_for("response.done", count=created_n + 2, timeout=30)
            await asyncio.sleep(1.0 + random.uniform(0, 0.3))  # let the last reply finish playing
    return out


async def run_conversation_webrtc(url: str, sessions: int, audio_dir: Path, interrupt_every: int = 3,
                                  sampler: Any = None) -> dict[str, Any]:
    from kombain.server.transports.webrtc.ice import restrict_host_addresses

    rows = (audio_dir / "transcripts.tsv").read_text().strip().splitlines()[1:]
    clips = [read_wav(audio_dir / r.split("\t", 1)[0]) for r in rows]

    async def start(i: int) -> dict[str, list[float]]:
        await asyncio.sleep(random.uniform(0, 1.0) if sessions > 1 else 0)
        return await _one(url, list(clips), interrupt_every)

    sampling = asyncio.create_task(sampler.run()) if sampler else None
    with restrict_host_addresses(("127.0.0.1",)):
        results = await asyncio.gather(*(start(i) for i in range(sessions)), return_exceptions=True)
    if sampling:
        sampling.cancel()
    stages: dict[str, list[float]] = {k: [] for k in ("setup", "stt_final", "turn", "barge_in", "tts_first_audio")}
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    for r in results:
        if not isinstance(r, BaseException):
            for k, v in r.items():
                stages[k] += v
    return {"sessions": sessions, "transport": "webrtc", "responses": {"calls": sessions - len(errors)},
            "stages": {k: summary(v) for k, v in stages.items()}, "samples": stages, "errors": errors,
            "server": sampler.summary() if sampler else None}
