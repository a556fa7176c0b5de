"""Semantic end of turn: Smart Turn's verdict on the audio, with the transcript as a second cue.

`TurnPredictor` runs the model off the event loop on a small pool shared by every call (one
thread by default: an inference is ~70-90 ms on one core, and voice must keep the other).
`complete_probability` folds in the transcript: a turn whose last word is one that cannot end a
sentence ("and", "the", "to", ...) is not complete, whatever the intonation says.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from kombain.streaming.endpointer import EAGERNESS_MAX_MS

# What semantic_vad used before its schedules (below): one threshold per eagerness, rechecks every
# 400 ms up to the eagerness's cap. Kept for the offline sweep of `python -m kombain.loadtest turns`.
THRESHOLDS = {"low": 0.8, "medium": 0.5, "auto": 0.5, "high": 0.3}
RECHECK_MS = 400

# Words a finished sentence does not end on: conjunctions, articles, prepositions, fillers. Not
# "is", "was", "you" and the like: "than he was.", "thank you." end sentences (held-back speech).
INCOMPLETE_WORDS = frozenset("""
a an the and or but so because if that than then to of in on at for with from by into about as
my your his her their our its um uh er erm like i we they he she it's i'm
""".split())
_WORD = re.compile(r"[a-z0-9']+")  # a number is a word: "a table for 4." ends on "4", not "for"
UNFINISHED_ENDINGS = ("...", "\u2026", ",", "-", "\u2014", "\u2013")


@dataclass(frozen=True, slots=True)
class TurnSchedule:
    """When semantic_vad asks the turn model, and what verdict ends the turn (silence in ms).

    The model is asked at the pause (`first_ms` of silence) and then every `step_ms` while the
    verdict is "unfinished"; at `cap_ms` of silence the turn ends whatever it says. A verdict ends
    the turn when its complete probability reaches `alone` while the turn's words are not decoded
    yet (the model's word alone), or `with_words` once they are (the transcript cue has capped it
    where the words cannot end a sentence). Calibrated with
    `python -m kombain.loadtest turn_calibration` (docs/performance.md)."""

    first_ms: int = 160
    alone: float = 0.99
    with_words: float = 0.3
    step_ms: int = 320
    cap_ms: int = 2000

    def checks(self) -> Iterator[int]:
        """The silences (ms) at which the model is asked, before the cap."""
        ms = self.first_ms
        while ms < self.cap_ms:
            yield ms
            ms += max(1, self.step_ms)

    def threshold(self, have_words: bool) -> float:
        return self.with_words if have_words else self.alone

    def next_check(self, silence_ms: int) -> int:
        """The silence of the check after one at `silence_ms` (the cap if that comes first)."""
        return min(self.cap_ms, silence_ms + max(1, self.step_ms))


# Per eagerness (auto = medium) and kind of audio (wideband: WebSocket, WebRTC; phone: audio from an
# 8 kHz source, i.e. G.711 on Twilio, Asterisk, SIP). Calibrated on the data of
# `python -m kombain.loadtest turn_calibration` (docs/performance.md).
SCHEDULES: dict[tuple[str, str], TurnSchedule] = {
    ("low", "wideband"): TurnSchedule(alone=0.99, with_words=0.8, step_ms=320, cap_ms=EAGERNESS_MAX_MS["low"]),
    ("medium", "wideband"): TurnSchedule(alone=0.99, with_words=0.3, step_ms=320, cap_ms=EAGERNESS_MAX_MS["medium"]),
    ("high", "wideband"): TurnSchedule(alone=0.985, with_words=0.3, step_ms=320, cap_ms=EAGERNESS_MAX_MS["high"]),
    # The G.711 round trip moved the scores too little on this data to call for other values.
    ("low", "phone"): TurnSchedule(alone=0.99, with_words=0.8, step_ms=320, cap_ms=EAGERNESS_MAX_MS["low"]),
    ("medium", "phone"): TurnSchedule(alone=0.99, with_words=0.3, step_ms=320, cap_ms=EAGERNESS_MAX_MS["medium"]),
    ("high", "phone"): TurnSchedule(alone=0.985, with_words=0.3, step_ms=320, cap_ms=EAGERNESS_MAX_MS["high"]),
}


def schedule_for(eagerness: str, narrowband: bool = False) -> TurnSchedule:
    """The schedule for a session's eagerness and its audio (narrowband: from an 8 kHz source)."""
    key = "medium" if eagerness == "auto" else eagerness
    return SCHEDULES.get((key, "phone" if narrowband else "wideband"), SCHEDULES[("medium", "wideband")])


class TurnModel(Protocol):
    def predict(self, audio16k: np.ndarray) -> float: ...


class TurnPredictor:
    """The end-of-turn model behind a bounded thread pool; `await predict(audio)`."""

    def __init__(self, model: TurnModel, *, workers: int = 1,
                 on_inference: Callable[[float], None] | None = None) -> None:
        self.model = model
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="smart-turn")
        self._on_inference = on_inference or (lambda s: None)
        self.pending = 0

    async def predict(self, audio16k: np.ndarray) -> float:
        loop = asyncio.get_running_loop()
        self.pending += 1
        try:
            t0 = time.perf_counter()
            p = await loop.run_in_executor(self._pool, self.model.predict, audio16k)
            self._on_inference(time.perf_counter() - t0)
            return p
        finally:
            self.pending -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def last_word(transcript: str | None) -> str | None:
    words = _WORD.findall((transcript or "").lower())
    return words[-1] if words else None


def complete_probability(model_p: float, transcript: str | None) -> float:
    """The model's probability, capped when the transcript ends on a word no sentence ends on, or
    on what Whisper writes for speech that trails off or was cut short ("...", a comma, a dash)."""
    word = last_word(transcript)
    if word is not None and word in INCOMPLETE_WORDS:
        return min(model_p, 0.1)
    if (transcript or "").rstrip().endswith(UNFINISHED_ENDINGS):
        return min(model_p, 0.1)
    return model_p
