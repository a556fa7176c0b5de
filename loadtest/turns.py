"""`python -m kombain.loadtest turns`: turn-taking on real recorded speech, over real sockets.

One realtime WebSocket per mode (sessions run one after another, never concurrently, so load does
not confound latency). The client is a microphone: PCM16 at 24 kHz in 100 ms chunks paced at 1x,
with real (zero) silence whenever it has nothing to say. The data set is built only from the
recorded speech in tests/data/speech (8 clips with transcripts):

  complete   each clip, leading and trailing silence trimmed, then silence (up to 2 s; the mic
             keeps sending silence until the reply comes)
  paused     the same clips with a pause of 400, 800 or 1200 ms inserted at the middle word
             boundary (word times from faster-whisper tiny.en, snapped to the quietest 10 ms
             nearby); clips with fewer than 3 words are skipped. Each repeat rotates the pause
             length per clip, so `--repeats 3` plays every clip with every pause.
  word       a short real word cut from the clips (0.25-0.45 s), ~1 s into a long spoken reply
  noise      a 120/240 ms burst of band-passed white noise or a 200 ms click train at speech
             level (not a voice, so synthetic), ~1 s into a long reply
  interrupt  a whole clip spoken over a long reply, ~1 s into it

`--callers 1 4` runs every mode with one caller, then with four at once (each its own session playing
the whole data set, starts staggered); the runs are labelled `MODE xN` and pooled per mode. A plot of
latency (p50 to p95) against the cut-in rate is written beside the JSON.

Measured per mode (client clock; the mic is paced, so the send time of a chunk is known):
  latency          complete utterances: the last voiced chunk sent -> the first reply audio delta
  cut_in           paused utterances: a reply created before the utterance ended, or the utterance
                   split into two or more turns (committed items)
  false_interrupt  word/noise over a reply: the reply was cancelled (status cancelled, turn_detected)
  held             word/noise that did not cancel: the longest gap in reply audio around the sound
                   (the server holds output at the first voiced frame and resumes after a blip)
  true interrupt   share cancelled; the first voiced chunk sent -> the last reply audio delta
                   received ("heard": the server holds at the first voiced frame) and -> response.done

Long replies are `response.create` with `metadata.kombain_say`; during the word/noise/interrupt
set `create_response` is off, so the interruption itself is not answered (barge-in does not depend
on it) and the next trial starts sooner. The client cancels each answer once its first audio has
arrived (`response.cancel`), so a run takes minutes, not the length of every reply.

An offline section runs the same end-of-turn model (Smart Turn v3.2) on the same audio, as the
server's first check would see it, and reports, per threshold, how many complete utterances pass
at once and how many mid-sentence pauses would be cut into.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import re
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import websockets

from kombain.loadtest.stats import summary

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
# The first chunk the server synthesises is one short clause (at most six words): make it ~2 s long,
# so the sound at ~1 s falls in steadily paced audio, not in the seam before the next chunk.
LONG_REPLY = (
    "Welcome to the customer information service. Before we go on, let me read you the full list of options, "
    "and please take your "
    "time, because there are quite a few of them today. You can check the balance of any account, move "
    "money between your own accounts, pay a bill that is already set up, or add a new person to pay. You "
    "can also report a card as lost or stolen, order a new card, change the limit on a card, or switch "
    "paper statements off. If you are calling about a payment that you do not recognise, we can look at "
    "it together, and if it turns out to be fraud we will block the card and send a new one. Opening "
    "hours are eight in the morning to eight at night on weekdays, and nine to five on Saturdays."
)


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


def load_clips(audio_dir: Path, log: Callable[[str], None] = print) -> list[Clip]:
    """The recorded clips at 24 kHz, silence trimmed, with faster-whisper word times."""
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
    log(f"data set: {len(clips)} clips, word times in {time.monotonic() - t0:.1f} s")
    return clips


def complete_stimulus(c: Clip) -> Stimulus:
    return Stimulus(c.name, "complete", c.audio, _chunk_voiced(c.audio, c.threshold), c.text, clip=c.name)


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
                    last1, clip=c.name)


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


def build_dataset(audio_dir: Path, log: Callable[[str], None] = print) -> DataSet:
    clips = load_clips(audio_dir, log)
    complete = [complete_stimulus(c) for c in clips]
    paused = {p: [s for c in clips if (s := paused_stimulus(c, p)) is not None] for p in PAUSES_MS}
    voiced_levels = np.concatenate([r[r >= c.threshold] for c in clips if len(r := _frame_rms(c.audio))])
    level = float(np.median(voiced_levels))
    interrupts = [Stimulus(c.name, "interrupt", c.audio, _chunk_voiced(c.audio, c.threshold), c.text, clip=c.name)
                  for c in clips]
    return DataSet(clips, complete, paused, word_stimuli(clips), noise_stimuli(level), interrupts, level)


# --- the socket ------------------------------------------------------------------------------------


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


class Session:
    """A realtime WebSocket: a paced microphone (silence when idle) and an event log with receive times."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.log: list[tuple[float, dict[str, Any]]] = []
        self._new = asyncio.Event()
        self._queue: deque[tuple[Playback, int]] = deque()
        self.open_turns: set[str] = set()
        self.pending_finals: set[str] = set()  # committed turns whose transcript has not come yet
        self.active: set[str] = set()
        self.created: dict[str, float] = {}
        self.errors: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def open(cls, url: str) -> Session:
        ws = await websockets.connect(url.rstrip("/").replace("http://", "ws://") + "/v1/realtime",
                                      max_size=2**24, open_timeout=20)
        s = cls(ws)
        s._tasks = [asyncio.create_task(s._read()), asyncio.create_task(s._mic())]
        await s.wait(lambda t, e: e["type"] == "session.created", 0, 20)
        return s

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            await self.ws.close()

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    async def update(self, session: dict[str, Any]) -> dict[str, Any]:
        since = len(self.log)
        await self.send({"type": "session.update", "session": session})
        _, e = await self.wait(lambda t, e: e["type"] in ("session.updated", "error"), since, 10)
        if e["type"] == "error":
            raise RuntimeError(f"session.update refused: {e['error']}")
        return e["session"]

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                now = time.monotonic()
                e = json.loads(msg)
                t = e.get("type", "")
                if t == "response.output_audio.delta":
                    e = {"type": t, "response_id": e.get("response_id"),
                         "seconds": len(base64.b64decode(e.get("delta", ""))) / 2 / RATE}
                elif t == "input_audio_buffer.speech_started":
                    self.open_turns.add(e["item_id"])
                elif t == "input_audio_buffer.speech_stopped":
                    self.open_turns.discard(e["item_id"])
                elif t == "input_audio_buffer.committed":
                    self.pending_finals.add(e["item_id"])
                elif t in ("conversation.item.input_audio_transcription.completed",
                           "conversation.item.input_audio_transcription.failed"):
                    self.pending_finals.discard(e["item_id"])
                elif t == "response.created":
                    self.active.add(e["response"]["id"])
                    self.created[e["response"]["id"]] = now
                elif t == "response.done":
                    self.active.discard(e["response"]["id"])
                elif t == "error" and e["error"].get("code") != "response_cancel_not_active":
                    self.errors.append(f"{e['error'].get('code')}: {e['error'].get('message')}")
                self.log.append((now, e))
                self._new.set()
        except websockets.ConnectionClosed as exc:
            self.errors.append(f"socket closed: {exc}")
        self._new.set()

    async def _mic(self) -> None:
        silence = bytes(CHUNK * 2)
        t0 = time.monotonic()
        n = 0
        while True:
            item = self._queue.popleft() if self._queue else None
            chunk = item[0].chunks[item[1]] if item else silence
            now = time.monotonic()
            await self.ws.send(json.dumps({"type": "input_audio_buffer.append",
                                           "audio": base64.b64encode(chunk).decode()}))
            if item:
                item[0].mark(item[1], now)
            n += 1
            delay = t0 + n * CHUNK_MS / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:  # the loop stalled: re-anchor rather than burst
                t0, n = time.monotonic(), 0

    def play(self, chunks: list[bytes]) -> Playback:
        pb = Playback(chunks)
        self._queue.extend((pb, i) for i in range(len(chunks)))
        return pb

    def drop_pending(self) -> None:
        """Forget queued audio (only trailing silence is ever dropped: idle sends silence anyway)."""
        self._queue.clear()

    async def wait(self, pred: Callable[[float, dict[str, Any]], bool], since: int,
                   limit_s: float) -> tuple[float, dict[str, Any]]:
        """The first logged event from index `since` on that matches; TimeoutError after `limit_s` s."""
        i = since
        async with asyncio.timeout(limit_s):
            while True:
                while i < len(self.log):
                    t, e = self.log[i]
                    i += 1
                    if pred(t, e):
                        return t, e
                if self._tasks and self._tasks[0].done():
                    raise ConnectionError("socket closed")
                self._new.clear()
                if i < len(self.log):
                    continue
                await self._new.wait()

    async def wait_or_none(self, pred: Callable[[float, dict[str, Any]], bool], since: int,
                           limit_s: float) -> tuple[float, dict[str, Any]] | None:
        try:
            return await self.wait(pred, since, max(0.0, limit_s))
        except TimeoutError:
            return None

    async def quiet(self, limit_s: float, settle: float = 0.2) -> bool:
        """Wait until no user turn is open or awaits its transcript and no reply is active (cancelling
        replies left over)."""
        deadline = time.monotonic() + limit_s
        cancelled = False
        while self.open_turns or self.active or self.pending_finals:
            if time.monotonic() > deadline:
                if self.active and not cancelled:
                    await self.send({"type": "response.cancel"})
                    cancelled, deadline = True, time.monotonic() + 3
                    continue
                return False
            if self.active and not self.open_turns and not cancelled:
                await self.send({"type": "response.cancel"})
                cancelled = True
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await self._new.wait()
        await asyncio.sleep(settle)
        return True

    def since(self, i: int, type_: str, t_from: float = 0.0) -> list[tuple[float, dict[str, Any]]]:
        return [(t, e) for t, e in self.log[i:] if e["type"] == type_ and t >= t_from]


# --- trials ----------------------------------------------------------------------------------------


def _max_wait_s(td: dict[str, Any]) -> float:
    if td["type"] == "semantic_vad":
        return EAGERNESS_MAX_MS[td.get("eagerness", "auto")] / 1000
    return td.get("silence_duration_ms", 500) / 1000


async def utterance_trial(s: Session, stim: Stimulus, td: dict[str, Any]) -> dict[str, Any]:
    """Speak a complete or paused utterance and wait for the answer (then cancel it)."""
    ok = await s.quiet(_max_wait_s(td) + 3)
    start = len(s.log)
    silence = [bytes(CHUNK * 2)] * 20  # 2 s
    pb = s.play(stim.chunks + silence)
    rec: dict[str, Any] = {"stimulus": stim.name, "pause_ms": stim.pause_ms, "quiet_before": ok}
    if stim.kind == "paused":
        pause_from = await pb.sent_at(stim.part1_chunk)
        resume = await pb.sent_at(stim.pause_chunk)
        rec["pause_sent_s"] = [round(pause_from, 3), round(resume, 3)]
    eos = await pb.sent_at(stim.last_voiced)
    got = await s.wait_or_none(lambda t, e: e["type"] == "response.output_audio.delta"
                               and s.created.get(e["response_id"], 0) >= eos, start, _max_wait_s(td) + 3.0)
    if got is None:
        rec["latency_s"] = None
    else:
        t, e = got
        rid = e["response_id"]
        rec["latency_s"] = round(t - eos, 4)
        rec["created_after_eos_s"] = round(s.created[rid] - eos, 4)
        await s.send({"type": "response.cancel"})
        done = await s.wait_or_none(lambda t, e: e["type"] == "response.done" and e["response"]["id"] == rid,
                                    start, 5)
        if done is not None:
            rec["server_timings_ms"] = (done[1]["response"].get("kombain") or {}).get("timings_ms", {})
    s.drop_pending()
    early = [(t, e) for t, e in s.since(start, "response.created") if t < eos]
    commits = [e for t, e in s.since(start, "input_audio_buffer.committed")
               if got is None or t <= s.created.get(got[1]["response_id"], math.inf)]
    finals = [e.get("transcript", "") for _, e in s.since(start, "conversation.item.input_audio_transcription.completed")]
    rec["turns"] = len(commits)
    rec["transcripts"] = finals
    if commits:  # what the partials had published when the last turn ended (the end-of-turn text cue)
        item = commits[-1]["item_id"]
        stop = next((t for t, e in s.since(start, "input_audio_buffer.speech_stopped") if e["item_id"] == item),
                    math.inf)
        rec["partial_at_stop"] = "".join(e.get("delta", "") for t, e in s.since(
            start, "conversation.item.input_audio_transcription.delta") if e["item_id"] == item and t <= stop)
    rec["early_replies"] = len(early)
    if stim.kind == "paused":
        rec["reply_in_pause"] = any(rec["pause_sent_s"][0] <= t <= resume + 0.05 for t, _ in early)
    rec["cut_in"] = bool(early) or len(commits) >= 2
    return rec


async def reply_trial(s: Session, stim: Stimulus, td: dict[str, Any]) -> dict[str, Any]:
    """Play a word, a noise or a whole clip ~1 s into a long reply; see whether and how fast it is cut."""
    wait_s = _max_wait_s(td)
    ok = await s.quiet(wait_s + 3)
    start = len(s.log)
    await s.send({"type": "response.create", "response": {"instructions": LONG_REPLY,
                                                          "metadata": {"kombain_say": "true"}}})
    rec: dict[str, Any] = {"stimulus": stim.name, "kind": stim.kind, "quiet_before": ok}
    first = await s.wait_or_none(lambda t, e: e["type"] == "response.output_audio.delta", start, 10)
    if first is None:
        rec["outcome"] = "no_reply"
        return rec
    rid = first[1]["response_id"]
    await asyncio.sleep(max(0.0, first[0] + 1.0 - time.monotonic()))
    pb = s.play(stim.chunks + [bytes(CHUNK * 2)] * 10)
    onset = await pb.sent_at(stim.first_voiced)
    end = await pb.sent_at(stim.last_voiced)

    def done_of(t: float, e: dict[str, Any]) -> bool:
        return e["type"] == "response.done" and e["response"]["id"] == rid

    # Done (cancelled), or the reply flowing again after the sound: it resumed. While an interruption
    # is being confirmed the server sends nothing, so audio after the sound means it let it go.
    got = await s.wait_or_none(lambda t, e: done_of(t, e) or (
        e["type"] == "response.output_audio.delta" and e["response_id"] == rid and t > end + 0.3),
        start, end - time.monotonic() + wait_s + 2.0)
    audio = [(t, e["seconds"]) for t, e in s.since(start, "response.output_audio.delta") if e["response_id"] == rid]
    deltas = [t for t, _ in audio]
    if got is not None and got[1]["type"] == "response.done":
        r = got[1]["response"]
        reason = (r.get("status_details") or {}).get("reason")
        rec["outcome"] = "cancelled" if r["status"] == "cancelled" else r["status"]
        rec["reason"] = reason
        rec["done_s"] = round(got[0] - onset, 4)
        before = [t for t in deltas if t <= got[0]]
        rec["heard_s"] = round(max(0.0, before[-1] - onset), 4) if before else 0.0
        rec["server_barge_in_ms"] = ((r.get("kombain") or {}).get("timings_ms") or {}).get("barge_in")
    else:
        rec["outcome"] = "resumed" if got is not None else "stalled"
        await s.send({"type": "response.cancel"})
        await s.wait_or_none(done_of, start, 5)
    until = got[0] if got else time.monotonic()
    rec["held_s"] = _held(deltas, onset, until)
    if rec["outcome"] == "resumed":
        rec["heard_gap_s"] = _heard_gap(audio, onset)
    s.drop_pending()
    rec["quiet_after"] = await s.quiet(wait_s + 3, settle=0.0)  # the sound's own turn ends
    rec["turns"] = len(s.since(start, "input_audio_buffer.committed"))
    rec["transcripts"] = [e.get("transcript", "")
                          for _, e in s.since(start, "conversation.item.input_audio_transcription.completed")]
    rec["onset_to_end_s"] = round(end - onset, 3)
    return rec


def _held(deltas: list[float], onset: float, until: float) -> float | None:
    """The longest pause in arriving reply audio that overlaps [onset, until] (~0.1 s: no hold)."""
    gaps = [b - a for a, b in zip(deltas, deltas[1:], strict=False) if b > onset and a <= until]
    return round(max(gaps), 4) if gaps else None


def _heard_gap(audio: list[tuple[float, float]], onset: float) -> float:
    """Silence a player would hear after `onset`: play each delta as it arrives, back to back
    (the server keeps up to 0.5 s ahead, so a short hold is bridged by what is buffered)."""
    end, gap = -math.inf, 0.0
    for t, dur in audio:
        if end > -math.inf and t > end and t > onset:
            gap += t - max(end, onset)
        end = max(end, t) + dur
    return round(gap, 4)


# --- runs ------------------------------------------------------------------------------------------


def _grid_label(ms: int, words: int) -> str:
    return f"min_speech_ms={ms}, min_words={words}"


async def run_mode(url: str, name: str, td: dict[str, Any], ds: DataSet, sets: tuple[str, ...], repeats: int,
                   ext: tuple[int, int], true_per_repeat: int, log: Callable[[str], None]) -> dict[str, Any]:
    t0 = time.monotonic()
    load_before = os.getloadavg()[0]
    s = await Session.open(url)
    ext_fields = {"kombain_interrupt_min_speech_ms": ext[0], "kombain_interrupt_min_words": ext[1]}
    out: dict[str, Any] = {"mode": name, "interrupt": {"min_speech_ms": ext[0], "min_words": ext[1]},
                           "complete": [], "paused": [], "reply": []}
    try:
        got = await s.update({"type": "realtime", "audio": {"input": {"turn_detection": td | ext_fields
                                                                       | {"create_response": True}}}})
        out["session_turn_detection"] = got.get("audio", {}).get("input", {}).get("turn_detection")
        for r in range(repeats):
            if "complete" in sets:
                for stim in ds.complete:
                    out["complete"].append(await utterance_trial(s, stim, td) | {"repeat": r})
            if "paused" in sets:
                for stim in ds.paused_for_repeat(r):
                    out["paused"].append(await utterance_trial(s, stim, td) | {"repeat": r})
            if "interrupt" in sets:
                await s.update({"type": "realtime", "audio": {"input": {"turn_detection": td | ext_fields
                                                                         | {"create_response": False}}}})
                for stim in [*ds.words, *ds.noises, *ds.interrupts_for_repeat(r, true_per_repeat)]:
                    out["reply"].append(await reply_trial(s, stim, td) | {"repeat": r})
                await s.update({"type": "realtime", "audio": {"input": {"turn_detection": td | ext_fields
                                                                         | {"create_response": True}}}})
    finally:
        out["errors"] = s.errors
        await s.close()
    out["seconds"] = round(time.monotonic() - t0, 1)
    # The machine's 1-minute load around the run: other work on the box shows up here (a quiet run
    # with this benchmark alone sits near 1.0 on 2 cores).
    out["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    out["summary"] = summarize(out)
    log(f"  {name} [{_grid_label(*ext)}]: {out['seconds']:.0f} s, load {out['loadavg_1m']}")
    return out


async def run_callers(url: str, n: int, name: str, ds: DataSet, sets: tuple[str, ...], repeats: int,
                      true_per_repeat: int, log: Callable[[str], None]) -> dict[str, Any]:
    """`n` sessions of one mode at once, each playing the whole data set (starts staggered by 0.37 s so
    their turns do not end in lockstep); their trials pooled into one run labelled `name xN`."""
    async def one(i: int) -> dict[str, Any]:
        await asyncio.sleep(0.37 * i)
        return await run_mode(url, name, MODES[name], ds, sets, repeats, (0, 0), true_per_repeat,
                              lambda msg: None)

    t0 = time.monotonic()
    load_before = os.getloadavg()[0]
    parts = await asyncio.gather(*[one(i) for i in range(n)])
    out: dict[str, Any] = {"mode": f"{name} x{n}", "callers": n, "interrupt": parts[0]["interrupt"],
                           "session_turn_detection": parts[0].get("session_turn_detection"),
                           "complete": [r | {"caller": i} for i, p in enumerate(parts) for r in p["complete"]],
                           "paused": [r | {"caller": i} for i, p in enumerate(parts) for r in p["paused"]],
                           "reply": [r | {"caller": i} for i, p in enumerate(parts) for r in p["reply"]],
                           "errors": [e for p in parts for e in p["errors"]],
                           "seconds": round(time.monotonic() - t0, 1),
                           "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    out["summary"] = summarize(out)
    log(f"  {out['mode']}: {out['seconds']:.0f} s, load {out['loadavg_1m']}")
    return out


def plot(runs: list[dict[str, Any]], path: Path) -> Path | None:
    """Latency as heard (p50 and p95) against the cut-in rate into mid-sentence pauses, one point per
    mode and caller count: the trade-off each setting makes."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 5))
    for run in runs:
        m = run["summary"]
        if not m["latency"]["count"] or not m["cut_in"]["n"]:
            continue
        x = 100 * m["cut_in"]["rate"]
        (pt,) = ax.plot([x, x], [m["latency"]["p50_ms"], m["latency"]["p95_ms"]], marker="o",
                        label=f"{run['mode']} (n={m['latency']['count']})")
        ax.annotate(run["mode"], (x, m["latency"]["p95_ms"]), fontsize=8, xytext=(4, 2), textcoords="offset points")
    ax.axhline(400, color="grey", linestyle=":", label="p95 goal, 1 caller (400 ms)")
    ax.axhline(250, color="grey", linestyle="--", label="p50 goal, 1 caller (250 ms)")
    ax.set_xlabel("cut-in rate into 400-1200 ms mid-sentence pauses (%)")
    ax.set_ylabel("latency as heard (ms): p50 (lower dot) to p95")
    ax.set_title("Turn-taking over WebSocket: latency against cut-ins", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _rate(hits: int, n: int) -> dict[str, Any]:
    return {"n": n, "count": hits, "rate": round(hits / n, 3) if n else None}


def summarize(run: dict[str, Any]) -> dict[str, Any]:
    comp = run["complete"]
    lat = [r["latency_s"] for r in comp if r["latency_s"] is not None]
    sw = [r["server_timings_ms"]["silence_wait"] / 1000 for r in comp
          if "silence_wait" in (r.get("server_timings_ms") or {})]
    paused = run["paused"]
    by_pause = {str(p): _rate(sum(r["cut_in"] for r in paused if r["pause_ms"] == p),
                              sum(1 for r in paused if r["pause_ms"] == p)) for p in PAUSES_MS}
    reply = run["reply"]
    short = [r for r in reply if r["kind"] in ("word", "noise")]

    def cancelled(rs: list[dict[str, Any]]) -> int:
        return sum(r.get("outcome") == "cancelled" for r in rs)

    words = [r for r in short if r["kind"] == "word"]
    noises = [r for r in short if r["kind"] == "noise"]
    true = [r for r in reply if r["kind"] == "interrupt"]
    cut = [r for r in true if r.get("outcome") == "cancelled"]
    held = [r["held_s"] for r in short if r.get("outcome") == "resumed" and r.get("held_s") is not None]
    heard_gap = [r["heard_gap_s"] for r in short if r.get("outcome") == "resumed" and "heard_gap_s" in r]
    return {
        "latency": summary(lat),
        "latency_timeouts": sum(r["latency_s"] is None for r in comp),
        "complete_split": _rate(sum(r["cut_in"] for r in comp), len(comp)),
        "server_silence_wait": summary(sw),
        "cut_in": _rate(sum(r["cut_in"] for r in paused), len(paused)),
        "cut_in_by_pause_ms": by_pause,
        "reply_in_pause": _rate(sum(bool(r.get("reply_in_pause")) for r in paused), len(paused)),
        "paused_latency": summary([r["latency_s"] for r in paused if r["latency_s"] is not None]),
        "false_interrupt": _rate(cancelled(short), len(short)),
        "false_interrupt_words": _rate(cancelled(words), len(words)),
        "false_interrupt_noise": _rate(cancelled(noises), len(noises)),
        "short_sound_stalled": sum(r.get("outcome") == "stalled" for r in short),
        "held_when_resumed": summary(held),
        "heard_gap_when_resumed": summary(heard_gap),
        "true_interrupt_missed": sum(r.get("outcome") == "resumed" for r in true),
        "true_interrupt_cancelled": _rate(len(cut), len(true)),
        "true_interrupt_heard": summary([r["heard_s"] for r in cut]),
        "true_interrupt_done": summary([r["done_s"] for r in cut]),
    }


# --- offline: the end-of-turn model on the same audio -------------------------------------------


def semantic_sweep(ds: DataSet) -> dict[str, Any] | None:
    """Smart Turn on each utterance as the server's checks would see it: 300 ms of lead-in, the speech,
    then 160 ms of silence (first check) and 560 / 960 ms (rechecks every 400 ms). For each threshold:
    complete utterances passing the first check, and mid-sentence pauses passing a check that falls
    inside the pause (check time + ~100 ms of inference < pause). With the transcript cue applied."""
    try:
        import soxr

        from kombain.streaming.end_of_turn import THRESHOLDS, complete_probability
        from kombain.streaming.smart_turn import WINDOW_SAMPLES, SmartTurnModel

        model = SmartTurnModel.load(None, threads=1)
    except Exception as exc:  # the model is optional on a node
        return {"error": repr(exc)}

    def p_at(audio: np.ndarray, silence_ms: int, text: str) -> float:
        x = np.concatenate([np.zeros(RATE * 3 // 10, np.float32), audio, np.zeros(RATE * silence_ms // 1000,
                                                                                    np.float32)])
        x16 = soxr.resample(x, RATE, 16000).astype(np.float32)[-WINDOW_SAMPLES:]
        return complete_probability(model.predict(x16), text)

    checks = (160, 560, 960)
    complete: list[dict[str, Any]] = []
    for c in ds.clips:
        text = " ".join(w for w, _, _ in c.words)
        complete.append({"clip": c.name, "p": [round(p_at(c.audio, ms, text), 3) for ms in checks]})
    paused: list[dict[str, Any]] = []
    for c in ds.clips:
        b = boundary(c)
        if b is None:
            continue
        k, cut = b
        text = " ".join(w for w, _, _ in c.words[:k])
        paused.append({"clip": c.name, "prefix": text, "p": [round(p_at(c.audio[:cut], ms, text), 3)
                                                             for ms in checks]})
    table = []
    for th in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        row: dict[str, Any] = {"threshold": th,
                               "complete_at_first_check": _rate(sum(u["p"][0] >= th for u in complete), len(complete))}
        for pause in PAUSES_MS:
            inside = [i for i, ms in enumerate(checks) if ms + 100 < pause]
            row[f"cut_in_{pause}ms"] = _rate(sum(any(u["p"][i] >= th for i in inside) for u in paused), len(paused))
        table.append(row)
    return {"server_thresholds": THRESHOLDS, "checks_ms": list(checks), "complete": complete, "paused": paused,
            "by_threshold": table}


# --- output ----------------------------------------------------------------------------------------


def _ms(s: dict[str, Any]) -> str:
    if not s.get("count"):
        return "-"
    return f"{s['p50_ms']:.0f} / {s['p95_ms']:.0f}"


def _held_cell(m: dict[str, Any]) -> str:
    held, gap = m["held_when_resumed"], m["heard_gap_when_resumed"]
    if not held.get("count"):
        return "-"
    return f"{_ms(held)} ({gap['p95_ms']:.0f})" if gap.get("count") else _ms(held)


def _pct(r: dict[str, Any]) -> str:
    return "-" if not r["n"] else f"{r['count']}/{r['n']} ({100 * r['rate']:.0f}%)"


def table(runs: list[dict[str, Any]]) -> str:
    head = ("| mode | interrupt min_speech_ms / min_words | latency p50 / p95 / p99 ms (n) | cut-in (paused) "
            "| false interruptions (words; noise) | reply held p50 / p95 ms (heard gap p95) | true interruptions cancelled "
            "| heard p50 / p95 ms | done p50 / p95 ms |")
    lines = [head, "|" + " --- |" * 9]
    for run in runs:
        m = run["summary"]
        lat = m["latency"]
        lat_s = f"{_ms(lat)} / {lat['p99_ms']:.0f} ({lat['count']})" if lat["count"] else "-"
        if m["latency_timeouts"]:
            lat_s += f", {m['latency_timeouts']} no reply"
        lines.append(
            f"| {run['mode']} | {run['interrupt']['min_speech_ms']} / {run['interrupt']['min_words']} | {lat_s} "
            f"| {_pct(m['cut_in'])} | {_pct(m['false_interrupt'])} ({_pct(m['false_interrupt_words'])}; "
            f"{_pct(m['false_interrupt_noise'])}) | {_held_cell(m)} "
            f"| {_pct(m['true_interrupt_cancelled'])} | {_ms(m['true_interrupt_heard'])} "
            f"| {_ms(m['true_interrupt_done'])} |")
    return "\n".join(lines)


def detail_table(runs: list[dict[str, Any]]) -> str:
    lines = ["| mode | server silence wait p50 / p95 ms | complete utterances split | cut-in at 400 / 800 / 1200 ms "
             "| reply started inside the pause | latency after a pause p50 / p95 ms |",
             "| --- | --- | --- | --- | --- | --- |"]
    for run in runs:
        m = run["summary"]
        if not run["complete"] and not run["paused"]:
            continue
        by = " / ".join(_pct(m["cut_in_by_pause_ms"][str(p)]) for p in PAUSES_MS)
        lines.append(f"| {run['mode']} | {_ms(m['server_silence_wait'])} | {_pct(m['complete_split'])} | {by} "
                     f"| {_pct(m['reply_in_pause'])} | {_ms(m['paused_latency'])} |")
    return "\n".join(lines)


def sweep_table(sweep: dict[str, Any]) -> str:
    lines = ["| threshold | complete: pass at the first check | cut-in 400 ms | cut-in 800 ms | cut-in 1200 ms |",
             "| --- | --- | --- | --- | --- |"]
    for row in sweep["by_threshold"]:
        lines.append(f"| {row['threshold']} | {_pct(row['complete_at_first_check'])} | {_pct(row['cut_in_400ms'])} "
                     f"| {_pct(row['cut_in_800ms'])} | {_pct(row['cut_in_1200ms'])} |")
    return "\n".join(lines)


# --- CLI -------------------------------------------------------------------------------------------


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("turns", help="turn-taking on recorded speech: latency, cut-ins, false and true interruptions")
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES), metavar="MODE",
                   help=f"turn detection settings to run, one session each ({', '.join(MODES)})")
    p.add_argument("--repeats", type=int, default=1, help="passes over the data set per mode (pause lengths rotate)")
    p.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    p.add_argument("--grid", nargs="*", default=list(DEFAULT_GRID), metavar="MS:WORDS",
                   help="interruption settings (kombain_interrupt_min_speech_ms:min_words) run on --grid-mode "
                        "with the word/noise/interrupt set; every mode also runs 0:0")
    p.add_argument("--grid-mode", choices=list(MODES), default="semantic_auto", metavar="MODE")
    p.add_argument("--true-interruptions", type=int, default=2, help="whole clips over a reply, per repeat")
    p.add_argument("--callers", type=int, nargs="+", default=[1], metavar="N",
                   help="callers talking at once per mode (each its own session, starts staggered); e.g. 1 4")
    p.add_argument("--no-sweep", action="store_true", help="skip the offline end-of-turn threshold sweep")
    p.add_argument("--audio", type=Path, default=Path("tests/data/speech"))
    p.add_argument("--url", help="an already running server (default: start one here)")
    p.add_argument("--out", type=Path, default=Path("loadtest/results"))
    return p


def run(args: argparse.Namespace) -> int:
    from kombain.loadtest.server_proc import local_server

    if args.repeats < 1:
        print("--repeats must be at least 1", file=sys.stderr)
        return 2
    grid = []
    for g in args.grid:
        ms, _, words = g.partition(":")
        grid.append((int(ms), int(words or 0)))
    t0 = time.monotonic()
    ds = build_dataset(args.audio)
    sweep = None if args.no_sweep else semantic_sweep(ds)
    args.out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f} s] {msg}", flush=True)

    async def work(url: str) -> list[dict[str, Any]]:
        runs = []
        for n in args.callers:
            for name in args.modes:
                if n == 1:
                    runs.append(await run_mode(url, name, MODES[name], ds, tuple(args.sets), args.repeats, (0, 0),
                                               args.true_interruptions, log))
                else:
                    runs.append(await run_callers(url, n, name, ds, tuple(args.sets), args.repeats,
                                                  args.true_interruptions, log))
        for ext in grid:
            if ext == (0, 0):
                continue
            runs.append(await run_mode(url, args.grid_mode, MODES[args.grid_mode], ds, ("interrupt",),
                                       args.repeats, ext, args.true_interruptions, log))
        return runs

    server: dict[str, Any] = {}
    if args.url:
        runs = asyncio.run(work(args.url))
        server["metrics"] = _fallbacks(args.url)
    else:
        with local_server(None, args.out / "server.log") as (url, _pid):
            log("server ready")
            runs = asyncio.run(work(url))
            server["metrics"] = _fallbacks(url)
    result = {"test": "turns", "taken": time.strftime("%Y-%m-%d %H:%M:%S"), "repeats": args.repeats,
              "seconds": round(time.monotonic() - t0, 1), "dataset": ds.describe(), "server": server,
              "runs": runs, "semantic_sweep": sweep}
    print()
    print(table(runs))
    print()
    print(detail_table(runs))
    if sweep and "by_threshold" in sweep:
        print("\noffline end-of-turn sweep (Smart Turn + transcript cue, same audio):")
        print(sweep_table(sweep))
    errors = [e for r in runs for e in r["errors"]]
    for e in errors[:10]:
        print(f"error: {e}", file=sys.stderr)
    if server.get("metrics", {}).get("kombain_semantic_vad_fallbacks_total"):
        print("warning: semantic_vad fell back to server_vad (end-of-turn model not loaded)", file=sys.stderr)
    path = args.out / f"turns-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1, default=float))
    png = plot(runs, path.with_suffix(".png"))
    print(f"\nwrote {path}" + (f" and {png}" if png else "") + f" ({result['seconds']:.0f} s)")
    return 0 if not errors else 1


def _fallbacks(url: str) -> dict[str, float]:
    """Counters that say whether semantic_vad really ran (scraped from /metrics; best effort)."""
    try:
        import httpx

        text = httpx.get(url.rstrip("/") + "/metrics", timeout=5).text
    except Exception:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith(("kombain_semantic_vad_fallbacks_total", "kombain_turn_model_load_failures_total",
                            "kombain_turn_model_seconds_count", "kombain_turn_model_seconds_sum")):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kombain.loadtest.turns", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_parser(ap.add_subparsers(dest="test", required=True))
    return run(ap.parse_args(["turns", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
