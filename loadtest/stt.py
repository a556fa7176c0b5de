"""`python -m loadtest stt`: N concurrent real-time callers stream recorded speech over /v1/realtime.

Each caller streams every clip of the audio directory (1.5 s of silence between clips, so each
clip is one turn) at 1x speed over its own WebSocket, staggered at start. Reported per stage
(client-side clocks, so they include the socket):
  stt_final    speech_stopped received -> final transcript received
  partial_lag  the moment the audio a partial covers (its audio_end_ms) was sent -> partial received
  final_decode model time of the decode behind each final (server-reported; it may have run
               speculatively during the silence before the end-of-turn decision)
plus word error rate of the finals against transcripts.tsv, and the server's CPU and memory.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from kombain.clients.realtime_client import StreamResult, read_wav, stream_audio
from kombain.loadtest.stats import summary
from kombain.loadtest.wer import wer

GAP_S = 1.5


def load_corpus(audio_dir: Path) -> tuple[np.ndarray, list[str]]:
    """All clips of the directory joined with silence (16 kHz), and their reference transcripts."""
    rows = (audio_dir / "transcripts.tsv").read_text().strip().splitlines()[1:]
    parts: list[np.ndarray] = [np.zeros(int(0.5 * 16000), np.float32)]
    refs: list[str] = []
    for name, text in (r.split("\t", 1) for r in rows):
        audio, rate = read_wav(audio_dir / name)
        if rate != 16000:
            audio = soxr.resample(audio, rate, 16000)
        parts += [audio, np.zeros(int(GAP_S * 16000), np.float32)]
        refs.append(text)
    return np.concatenate(parts), refs


def measure(result: StreamResult, chunk_ms: int = 20, speed: float = 1.0) -> dict[str, list[float]]:
    stops: dict[str, float] = {}
    finals: list[float] = []
    lags: list[float] = []
    decodes: list[float] = []
    for e in result.events:
        ev = e.event
        if ev["type"] == "input_audio_buffer.speech_stopped":
            stops[ev["item_id"]] = e.t
        elif ev["type"] == "conversation.item.input_audio_transcription.completed" and ev["item_id"] in stops:
            finals.append(e.t - stops[ev["item_id"]])
            if "decode_ms" in ev:
                decodes.append(ev["decode_ms"] / 1000)
        elif ev["type"] == "conversation.item.input_audio_transcription.delta" and "audio_end_ms" in ev:
            # The chunk holding that audio position left the client at its end on the audio clock.
            sent = np.ceil(ev["audio_end_ms"] / chunk_ms) * chunk_ms / 1000 / speed
            lags.append(max(0.0, e.t - sent))
    return {"stt_final": finals, "partial_lag": lags, "final_decode": decodes}


async def run_stt(url: str, sessions: int, audio_dir: Path, sampler: Any = None) -> dict[str, Any]:
    audio, refs = load_corpus(audio_dir)

    async def caller(i: int) -> StreamResult:
        await asyncio.sleep(random.uniform(0, 1.0) if sessions > 1 else 0)
        return await stream_audio(url, audio, 16000, trailing_silence_s=0.5, settle_s=10)

    sampling = asyncio.create_task(sampler.run()) if sampler else None
    results = await asyncio.gather(*(caller(i) for i in range(sessions)), return_exceptions=True)
    if sampling:
        sampling.cancel()
    stages: dict[str, list[float]] = {"stt_final": [], "partial_lag": [], "final_decode": []}
    pairs: list[tuple[str, str]] = []
    errors: list[str] = []
    for r in results:
        if isinstance(r, BaseException):
            errors.append(repr(r))
            continue
        for k, v in measure(r).items():
            stages[k] += v
        pairs.append((" ".join(refs), " ".join(r.finals)))
        errors += [e.event["error"]["message"] for e in r.of("error")]
    return {
        "sessions": sessions,
        "turns_expected": len(refs) * sessions,
        "turns_final": len(stages["stt_final"]),
        "stages": {k: summary(v) for k, v in stages.items()},
        "samples": stages,
        "wer": round(wer(pairs), 4) if pairs else None,
        "errors": errors,
        "server": sampler.summary() if sampler else None,
    }
