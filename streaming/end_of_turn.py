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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

# Complete-turn probability needed to answer at once, per eagerness (tuned with
# `python -m kombain.loadtest turns`; see docs/performance.md).
THRESHOLDS = {"low": 0.8, "medium": 0.5, "auto": 0.5, "high": 0.3}
# After an "incomplete" verdict the turn is checked again as the silence grows, this often.
RECHECK_MS = 400

# Words a finished sentence does not end on: conjunctions, articles, prepositions, fillers.
INCOMPLETE_WORDS = frozenset("""
a an the and or but so because if that than then to of in on at for with from by into about as
my your his her their our its um uh er erm like is are was were i you we they he she it's i'm
""".split())
_WORD = re.compile(r"[a-z']+")
UNFINISHED_ENDINGS = ("...", "\u2026", ",", "-", "\u2014", "\u2013")


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
