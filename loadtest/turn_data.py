"""The turn-taking benchmark's data set (`python -m kombain.loadtest turns`): recorded clips, the
stimuli built from them (complete, paused, word, noise, interrupt; see loadtest/turns.py), the
session settings each mode runs under, and `Playback`, the send times of what a caller plays."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RATE = 24000
CHUNK_MS = 100
CHUNK = RATE * CHUNK_MS // 1000  # samples per chunk
FRAME = RATE // 100  # 10 ms analysis frames
PAUSES_MS = (400, 800, 1200)
WORD_S = (0.25, 0.45)
# Function words are poor stand-ins for a short interjection; prefer content words for `word`.
_FUNCTION = frozenset("a an the and or but of to in on at for with from by as is it he she you".split())
EAGERNESS_MAX_MS = {"low": 8000, "medium": 4000, "high": 2000, "auto": 4000}

MODES: dict[str, dict[str, Any]] = {
    "server_vad_500": {"type": "server_vad", "silence_duration_ms": 500},
    "server_vad_200": {"type": "server_vad", "silence_duration_ms": 200},
    "semantic_low": {"type": "semantic_vad", "eagerness": "low"},
    "semantic_medium": {"type": "semantic_vad", "eagerness": "medium"},
    "semantic_high": {"type": "semantic_vad", "eagerness": "high"},
    "semantic_auto": {"type": "semantic_vad", "eagerness": "auto"},
}
SETS = ("complete", "paused", "interrupt")
DEFAULT_GRID = ("300:0", "500:0", "0:1", "300:1")


def speech_kind(clip: str) -> str:
    """`sentence` for a read sentence (the CMU ARCTIC clips), `command` for the others (playing cards,
    "go forward ten meters": short commands from the PocketSphinx test data)."""
    return "sentence" if clip.startswith("arctic") else "command"


def _max_wait_s(td: dict[str, Any]) -> float:
    """The longest silence a turn may wait under `td` before it ends."""
    if td["type"] == "semantic_vad":
        return EAGERNESS_MAX_MS[td.get("eagerness", "auto")] / 1000
    return td.get("silence_duration_ms", 500) / 1000


# --- the data set ---------------------------------------------------------------------------------


@dataclass
class Stimulus:
    name: str
    kind: str  # complete | paused | word | noise | interrupt
    signal: np.ndarray  # float32 at 24 kHz
    voiced: np.ndarray  # bool per 100 ms chunk
    text: str = ""
    pause_ms: int = 0
    pause_chunk: int = -1  # paused: the first chunk of part two that is voiced
    part1_chunk: int = -1  # paused: the last voiced chunk of part one
    clip: str = ""
    threshold: float = 0.005  # voiced 10 ms frame RMS (the clip's)
    pause_at: int = -1  # paused: the sample where the inserted silence starts

    def voiced_frames(self) -> np.ndarray:
        """Per 10 ms frame of the signal: is it voiced."""
        return np.asarray(_frame_rms(np.pad(self.signal, (0, (-len(self.signal)) % FRAME))) >= self.threshold)

    def edges_s(self) -> dict[str, float]:
        """Seconds into the signal: `start` of the first voiced 10 ms frame and `end` of the last; for a
        paused utterance also `part1_end` (end of the last voiced frame before the pause) and
        `part2_start` (start of the first voiced frame after it). What a caller with frames other
        than 100 ms chunks times its sends by."""
        v = np.flatnonzero(self.voiced_frames())
        out = {"start": float(v[0]) * FRAME / RATE, "end": float(v[-1] + 1) * FRAME / RATE}
        if self.kind == "paused" and self.pause_at >= 0:
            gap = RATE * self.pause_ms // 1000
            before, after = v[v * FRAME < self.pause_at], v[v * FRAME >= self.pause_at + gap]
            out["part1_end"] = float(before[-1] + 1) * FRAME / RATE if len(before) else out["start"]
            out["part2_start"] = float(after[0]) * FRAME / RATE if len(after) else out["end"]
        return out

    @property
    def chunks(self) -> list[bytes]:
        pcm = (np.clip(self.signal, -1, 1) * 32767).astype("<i2")
        n = math.ceil(len(pcm) / CHUNK)
        pcm = np.pad(pcm, (0, n * CHUNK - len(pcm)))
        return [pcm[i * CHUNK:(i + 1) * CHUNK].tobytes() for i in range(n)]

    @property
    def first_voiced(self) -> int:
        return int(np.argmax(self.voiced))

    @property
    def last_voiced(self) -> int:
        return int(len(self.voiced) - 1 - np.argmax(self.voiced[::-1]))

    @property
    def seconds(self) -> float:
        return len(self.signal) / RATE

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "seconds": round(self.seconds, 2), "text": self.text,
                "pause_ms": self.pause_ms, "chunks": len(self.voiced), "voiced_chunks": int(self.voiced.sum())}


@dataclass
class Clip:
    name: str
    text: str  # reference transcript
    audio: np.ndarray  # 24 kHz, trimmed
    offset_s: float  # where the trimmed audio starts in the original clip
    words: list[tuple[str, float, float]]  # faster-whisper words, seconds in the trimmed audio
    threshold: float  # voiced 10 ms frame RMS


def _frame_rms(x: np.ndarray) -> np.ndarray:
    n = len(x) // FRAME
    return np.sqrt(np.mean(x[: n * FRAME].reshape(n, FRAME) ** 2, axis=1) + 1e-12)


def _voiced_threshold(x: np.ndarray) -> float:
    """A 10 ms frame is voiced above a tenth of the clip's loud frames (95th percentile), floor -46 dBFS."""
    return max(0.005, 0.1 * float(np.percentile(_frame_rms(x), 95)))


def _chunk_voiced(x: np.ndarray, threshold: float) -> np.ndarray:
    """Per 100 ms chunk: does it hold any voiced 10 ms frame."""
    rms = _frame_rms(np.pad(x, (0, (-len(x)) % CHUNK)))
    return np.asarray((rms >= threshold).reshape(-1, CHUNK // FRAME).any(axis=1))


def _quietest(x: np.ndarray, at: int, span: int) -> int:
    """The start of the quietest 10 ms frame within `span` samples of `at`."""
    lo, hi = max(0, at - span), min(len(x) - FRAME, at + span)
    if hi <= lo:
        return at
    starts = np.arange(lo, hi, FRAME // 2)
    energy = [float(np.sum(x[s:s + FRAME] ** 2)) for s in starts]
    return int(starts[int(np.argmin(energy))])


def _fade(x: np.ndarray, ms: int = 10) -> np.ndarray:
    n = min(len(x) // 2, RATE * ms // 1000)
    if n:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        x = x.copy()
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def load_clips(audio_dir: Path, log: Callable[[str], None] = print, limit: int | None = None) -> list[Clip]:
    """The recorded clips at 24 kHz, silence trimmed, with faster-whisper word times (the first
    `limit` clips only, when given)."""
    import soxr

    from kombain.loadtest.word_times import clips_with_word_times

    t0 = time.monotonic()
    clips = []
    for name, text, audio, rate, words in clips_with_word_times(audio_dir):
        a24 = soxr.resample(audio, rate, RATE).astype(np.float32)
        thr = _voiced_threshold(a24)
        rms = _frame_rms(a24)
        on = np.flatnonzero(rms >= thr)
        start = max(0, (int(on[0]) - 5) * FRAME)  # keep 50 ms before the first voiced frame
        end = min(len(a24), (int(on[-1]) + 4) * FRAME)  # and 30 ms after the last
        off = start / RATE
        words = [(w, max(0.0, s - off), max(0.0, e - off)) for w, s, e in words]
        clips.append(Clip(name.removesuffix(".wav"), text.strip(), a24[start:end], off, words, thr))
        if limit is not None and len(clips) >= limit:
            break
    log(f"data set: {len(clips)} clips, word times in {time.monotonic() - t0:.1f} s")
    return clips


def complete_stimulus(c: Clip) -> Stimulus:
    return Stimulus(c.name, "complete", c.audio, _chunk_voiced(c.audio, c.threshold), c.text, clip=c.name,
                    threshold=c.threshold)


def boundary(c: Clip) -> tuple[int, int] | None:
    """(word index k, sample) of the middle word boundary: words[:k] | words[k:]; None if < 3 words."""
    if len(c.words) < 3:
        return None
    k = len(c.words) // 2
    t = (c.words[k - 1][2] + c.words[k][1]) / 2
    return k, _quietest(c.audio, int(t * RATE), RATE * 60 // 1000)


def paused_stimulus(c: Clip, pause_ms: int) -> Stimulus | None:
    b = boundary(c)
    if b is None:
        return None
    k, cut = b
    part1, part2 = c.audio[:cut], c.audio[cut:]
    gap = np.zeros(RATE * pause_ms // 1000, np.float32)
    sig = np.concatenate([part1, gap, part2])
    voiced = _chunk_voiced(sig, c.threshold)
    # The first voiced chunk of part two (the pause straddles chunk edges; count from its end).
    first2 = (len(part1) + len(gap)) // CHUNK
    while first2 < len(voiced) and not voiced[first2]:
        first2 += 1
    last1 = (len(part1) - 1) // CHUNK
    while last1 > 0 and not voiced[last1]:
        last1 -= 1
    before = " ".join(w for w, _, _ in c.words[:k])
    after = " ".join(w for w, _, _ in c.words[k:])
    return Stimulus(f"{c.name}+{pause_ms}ms", "paused", sig, voiced, f"{before} | {after}", pause_ms, first2,
                    last1, clip=c.name, threshold=c.threshold, pause_at=len(part1))


def word_stimuli(clips: list[Clip], limit: int = 4) -> list[Stimulus]:
    """Short real words (0.25-0.45 s of voiced audio), one per clip, no function words, no repeats."""
    found: list[Stimulus] = []
    seen: set[str] = set()
    for c in clips:
        for i, (w, s, e) in enumerate(c.words):
            key = re.sub(r"[^a-z0-9]", "", w.lower())
            if key in _FUNCTION or key in seen:
                continue
            # Whisper's edges are rough: snap the end to a quiet point, then keep the voiced part.
            a = int(s * RATE)
            z = _quietest(c.audio, int(e * RATE), RATE * 60 // 1000) if i + 1 < len(c.words) else len(c.audio)
            seg = c.audio[a:z]
            rms = _frame_rms(seg)
            on = np.flatnonzero(rms >= c.threshold)
            if not len(on):
                continue
            seg = seg[int(on[0]) * FRAME:(int(on[-1]) + 1) * FRAME]
            if WORD_S[0] <= len(seg) / RATE <= WORD_S[1]:
                seg = _fade(seg)
                seen.add(key)
                found.append(Stimulus(f"{c.name}:{w.strip('.,').lower()}", "word", seg,
                                      _chunk_voiced(seg, c.threshold), w.strip(".,"), clip=c.name))
                break
        if len(found) >= limit:
            break
    return found


def noise_stimuli(level_rms: float, seed: int = 7) -> list[Stimulus]:
    """Band-passed white noise (300-3400 Hz) of 120 and 240 ms and a 200 ms click train at 25 Hz,
    each at the speech clips' typical voiced level."""
    rng = np.random.default_rng(seed)
    out = []
    for ms in (120, 240):
        n = RATE * ms // 1000
        spec = np.fft.rfft(rng.standard_normal(n * 2))
        f = np.fft.rfftfreq(n * 2, 1 / RATE)
        spec[(f < 300) | (f > 3400)] = 0
        x = np.fft.irfft(spec)[:n].astype(np.float32)
        x = _fade(x * level_rms / (np.sqrt(np.mean(x**2)) + 1e-9), 5)
        out.append(Stimulus(f"bandnoise_{ms}ms", "noise", x, _chunk_voiced(x, 0.005), clip="(synthetic)"))
    n = RATE * 200 // 1000
    x = np.zeros(n, np.float32)
    click = np.hanning(48).astype(np.float32) * np.sign(rng.standard_normal(48)).astype(np.float32)
    for start in range(0, n - 48, RATE // 25):
        x[start:start + 48] = click
    # Level: the loudest 10 ms frames match loud speech frames (a click train's mean RMS is tiny).
    x *= level_rms * 3 / float(np.max(_frame_rms(x)))
    out.append(Stimulus("clicks_25hz_200ms", "noise", x, _chunk_voiced(x, 0.005), clip="(synthetic)"))
    return out


@dataclass
class DataSet:
    clips: list[Clip]
    complete: list[Stimulus]
    paused: dict[int, list[Stimulus]]  # pause_ms -> one per clip with >= 3 words
    words: list[Stimulus]
    noises: list[Stimulus]
    interrupts: list[Stimulus]
    level_rms: float

    def paused_for_repeat(self, r: int) -> list[Stimulus]:
        """One pause length per clip, rotated by repeat: three repeats cover every combination."""
        n = len(self.paused[PAUSES_MS[0]])
        return [self.paused[PAUSES_MS[(i + r) % len(PAUSES_MS)]][i] for i in range(n)]

    def interrupts_for_repeat(self, r: int, k: int) -> list[Stimulus]:
        return [self.interrupts[(r * k + i) % len(self.interrupts)] for i in range(k)]

    def describe(self) -> dict[str, Any]:
        return {
            "clips": [{"name": c.name, "reference": c.text, "seconds_trimmed": round(len(c.audio) / RATE, 2),
                       "whisper_words": [[w, round(s, 2), round(e, 2)] for w, s, e in c.words]} for c in self.clips],
            "paused": [s.describe() for p in PAUSES_MS for s in self.paused[p]],
            "words": [s.describe() for s in self.words],
            "noises": [s.describe() | {"rms": round(float(np.sqrt(np.mean(s.signal**2))), 4)} for s in self.noises],
            "speech_level_rms": round(self.level_rms, 4),
        }


def build_dataset(audio_dir: Path, log: Callable[[str], None] = print, limit: int | None = None) -> DataSet:
    clips = load_clips(audio_dir, log, limit)
    complete = [complete_stimulus(c) for c in clips]
    paused = {p: [s for c in clips if (s := paused_stimulus(c, p)) is not None] for p in PAUSES_MS}
    voiced_levels = np.concatenate([r[r >= c.threshold] for c in clips if len(r := _frame_rms(c.audio))])
    level = float(np.median(voiced_levels))
    interrupts = [Stimulus(c.name, "interrupt", c.audio, _chunk_voiced(c.audio, c.threshold), c.text, clip=c.name)
                  for c in clips]
    return DataSet(clips, complete, paused, word_stimuli(clips), noise_stimuli(level), interrupts, level)


class Playback:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.sent: list[float | None] = [None] * len(chunks)
        self._events = [asyncio.Event() for _ in chunks]

    async def sent_at(self, i: int) -> float:
        await self._events[i].wait()
        t = self.sent[i]
        assert t is not None
        return t

    def mark(self, i: int, t: float) -> None:
        self.sent[i] = t
        self._events[i].set()
