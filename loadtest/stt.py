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
    audio, refs, _ = load_corpus_with_offsets(audio_dir)
    return audio, refs


def load_corpus_with_offsets(audio_dir: Path) -> tuple[np.ndarray, list[str], list[float]]:
    """`load_corpus`, plus where each clip starts in the joined audio (seconds)."""
    rows = (audio_dir / "transcripts.tsv").read_text().strip().splitlines()[1:]
    parts: list[np.ndarray] = [np.zeros(int(0.5 * 16000), np.float32)]
    refs: list[str] = []
    offsets: list[float] = []
    for name, text in (r.split("\t", 1) for r in rows):
        audio, rate = read_wav(audio_dir / name)
        if rate != 16000:
            audio = soxr.resample(audio, rate, 16000)
        offsets.append(sum(len(p) for p in parts) / 16000)
        parts += [audio, np.zeros(int(GAP_S * 16000), np.float32)]
        refs.append(text)
    return np.concatenate(parts), refs, offsets


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


ARRIVALS = ("stagger", "burst", "poisson")


def start_times(sessions: int, arrivals: str, mean_gap_s: float, rng: random.Random) -> list[float]:
    """When each caller starts: `stagger` uniform over 1 s, `burst` all at once (every turn of
    every caller ends together), `poisson` exponential gaps of mean `mean_gap_s`."""
    if arrivals == "burst" or sessions == 1:
        return [0.0] * sessions
    if arrivals == "poisson":
        t, out = 0.0, []
        for _ in range(sessions):
            out.append(t)
            t += rng.expovariate(1 / mean_gap_s)
        return out
    return [rng.uniform(0, 1.0) for _ in range(sessions)]


async def run_stt(url: str, sessions: int, audio_dir: Path, sampler: Any = None, *, arrivals: str = "stagger",
                  mean_gap_s: float = 1.0, words: bool = True, seed: int = 0) -> dict[str, Any]:
    from kombain.loadtest.stt_words import WordStats, reference_words, stream_word_stats

    audio, refs, offsets = load_corpus_with_offsets(audio_dir)
    reference = await asyncio.to_thread(reference_words, audio_dir) if words else []
    starts = start_times(sessions, arrivals, mean_gap_s, random.Random(seed))

    async def caller(i: int) -> StreamResult:
        await asyncio.sleep(starts[i])
        return await stream_audio(url, audio, 16000, trailing_silence_s=0.5, settle_s=10)

    sampling = asyncio.create_task(sampler.run()) if sampler else None
    results = await asyncio.gather(*(caller(i) for i in range(sessions)), return_exceptions=True)
    if sampling:
        sampling.cancel()
    stages: dict[str, list[float]] = {"stt_final": [], "partial_lag": [], "final_decode": []}
    pairs: list[tuple[str, str]] = []
    errors: list[str] = []
    seen = WordStats()
    for r in results:
        if isinstance(r, BaseException):
            errors.append(repr(r))
            continue
        for k, v in measure(r).items():
            stages[k] += v
        if words:
            seen.add(stream_word_stats(r.events, reference, offsets, chunk_s=0.02))
        pairs.append((" ".join(refs), " ".join(r.finals)))
        errors += [e.event["error"]["message"] for e in r.of("error")]
    if words:
        stages["eos_final"], stages["word_lag"] = seen.eos_final, seen.lags
    return {
        "sessions": sessions,
        "arrivals": arrivals,
        "words": seen.summary() if words else None,
        "turns_expected": len(refs) * sessions,
        "turns_final": len(stages["stt_final"]),
        "stages": {k: summary(v) for k, v in stages.items()},
        "samples": stages,
        "wer": round(wer(pairs), 4) if pairs else None,
        "errors": errors,
        "server": sampler.summary() if sampler else None,
    }
