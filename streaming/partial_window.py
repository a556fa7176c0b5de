"""Windowed partial decodes: what audio a turn's next partial decodes, and which words before it are settled.

A partial that decodes the whole turn so far costs more the longer the turn is, and on a long
sentence its last words keep changing (a growing window cut mid-word sends Whisper into "eight of
spades, four of... eight of spades, four of..."), so two decodes rarely agree and words wait for
the end. Here every partial decodes with the words already published (two decodes agreed on
them) forced: those inside its window as Whisper's prefix (the decoder reads them, it does not
choose them again) and older ones as its prompt, so it only adds words after them; the whole
turn's hypothesis is the published words followed by those, which the Stabilizer compares with
the previous one as before. Published words are never taken back, and a word published wrongly
no longer stalls the rest of the turn (a whole-turn decode that disagrees with it published
nothing more until the final). Once the decode's word times say where published words end, they
are *committed* at the quietest point after them, and the window starts at a committed word
boundary about `context_s` before the last one: a few seconds of audio whatever the length of
the turn (`context_s` plus the time a published word waits to be committed, `align_after_s`).
An engine without word times (Moonshine) never commits: its partials decode the whole turn.

Positions are samples from the start of the turn's audio (16 kHz). Pure: no model, no clock.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kombain.streaming.decoding import DecodeOptions, DecodeResult
from kombain.streaming.stabilizer import same_word

RATE = 16000
_FRAME = RATE // 100  # 10 ms: the step of the quiet-point search
_EDGE = RATE // 25  # a cut is searched this far either side of the aligned gap between two words


@dataclass(frozen=True, slots=True)
class WindowPlan:
    """One partial's window: decode `audio[start:end]` of the turn with `options` (its prompt and
    forced prefix). `shown`: the words published when it was planned, the first `before` of them
    before `start` (the rest are the prefix); `committed`: how many were committed then."""

    start: int
    end: int
    options: DecodeOptions
    shown: tuple[str, ...] = ()
    before: int = 0
    committed: int = 0


class PartialWindow:
    """A turn's committed point for windowed partials (see the module docstring).

    `min_tail_s`: a cut is only made where at least this much decoded audio follows it, so a
    window always holds new speech. `context_s`: audio of committed words the window starts with.
    `align_after_s`: word times are asked for once a published word has waited this long to be
    committed (so commits come in steps of about a second, and most decodes need no alignment).
    `prompt_words`: at most this many committed words before the window go into the prompt."""

    def __init__(self, *, min_tail_s: float = 1.0, context_s: float = 3.0, align_after_s: float = 2.0,
                 prompt_words: int = 40) -> None:
        self.min_tail = int(min_tail_s * RATE)
        self.align_after = int(max(align_after_s, min_tail_s) * RATE)
        self.context = int(context_s * RATE)
        self.prompt_words = prompt_words
        self.reset()

    def reset(self) -> None:
        """A new turn: nothing committed, the next partial decodes the turn from its start."""
        self.committed: list[str] = []  # published words before the committed point
        self.bounds: list[int] = []  # the sample after each committed word (a pause, where there is one)
        self._words: list[str] = []  # the last hypothesis, and its words' aligned times (-1: unknown)
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._shown_at: list[int] = []  # per published word, the end of the decode that first had it published

    @property
    def point(self) -> int:
        """The committed point: the end of the last committed word (0: nothing committed)."""
        return self.bounds[-1] if self.bounds else 0

    def plan(self, end: int, options: DecodeOptions, published: Sequence[str] = ()) -> WindowPlan:
        """The window of a partial decoding the turn up to `end` with the session's `options`
        (its own prompt, if any, goes before the committed words), `published` the words shown
        so far: all of them are forced (those in the window as its prefix), so the decode only
        adds words after them. Word times (an alignment pass: about as long as the decode
        itself on a CPU) are asked for only when a published word has waited `align_after`."""
        due = any(at <= end - self.align_after for at in self._shown_at[len(self.committed):])
        options = dataclasses.replace(options, word_timestamps=due or options.word_timestamps)
        point = self.point
        before = 0  # committed words before the window's start
        for i, b in enumerate(self.bounds):
            if point - b >= self.context:
                before = i + 1
        start = self.bounds[before - 1] if before else 0
        prompt = options.prompt.strip() if options.prompt else ""
        words = ([prompt] if prompt else []) + list(published[:before][-self.prompt_words:])
        # Without the punctuation after its last word: after "table." Whisper may take the transcript
        # as done, and after a clipped "7-" it wrote "7-7 of clubs".
        prefix = re.sub(r"[^\w']+$", "", " ".join(published[before:]))
        options = dataclasses.replace(options, prompt=" ".join(words) or None, prefix=prefix or None)
        return WindowPlan(start, end, options, tuple(published), before, len(self.committed))

    def hypothesis(self, plan: WindowPlan, result: DecodeResult) -> str | None:
        """The whole turn as this window's decode reads it: the words shown, then what the
        decoder added after them. None if the plan is stale (words were committed while it
        decoded) or the decode does not start with its prefix. Word times (when the decode has
        them) are kept for `settle`."""
        forced = len(plan.shown) - plan.before
        if plan.committed != len(self.committed):
            return None
        decoded = result.text.split()
        if len(decoded) < forced or not all(
                same_word(a, b) for a, b in zip(decoded, plan.shown[plan.before:], strict=False)):
            return None
        words = list(plan.shown) + decoded[forced:]
        aligned = [w for seg in result.segments for w in seg.words]
        unknown = [-1] * len(words)
        self._words, self._starts, self._ends = words, unknown, list(unknown)
        if [w.word.strip() for w in aligned] == decoded:
            self._starts = unknown[: plan.before] + [plan.start + int(w.start * RATE) for w in aligned]
            self._ends = unknown[: plan.before] + [plan.start + int(w.end * RATE) for w in aligned]
        return " ".join(words)

    def settle(self, published: Sequence[str], audio: np.ndarray, end: int) -> None:
        """After the Stabilizer took the last hypothesis: commit the most published words (that
        the hypothesis agrees with) which leave at least `min_tail` of audio after them up to
        `end`, each cut at the quietest 10 ms between it and the next word. `audio`: the turn's
        audio up to `end`."""
        self._shown_at += [end] * (len(published) - len(self._shown_at))
        agreed = 0
        for p, w in zip(published, self._words, strict=False):
            if not same_word(p, w):
                break
            agreed += 1
        for k in range(agreed, len(self.committed), -1):  # commit words [0, k)
            cut = self._cut(k - 1, audio, end)
            if cut is None or cut <= self.point:
                continue
            bounds = [self._cut(i, audio, end) for i in range(len(self.committed), k - 1)]
            if any(b is None for b in bounds):
                continue
            self.committed = list(published[:k])
            last = self.point
            for b in [*bounds, cut]:
                last = max(last, min(b or 0, cut))
                self.bounds.append(last)
            return

    def _cut(self, i: int, audio: np.ndarray, end: int) -> int | None:
        """The cut after word `i` of the last hypothesis, or None where its times are unknown or
        the cut would leave less than `min_tail` before `end`."""
        last_end = self._ends[i] if i < len(self._ends) else -1
        if last_end < 0 or end - last_end < self.min_tail:
            return None
        nxt = self._starts[i + 1] if i + 1 < len(self._starts) else -1
        nxt = nxt if nxt >= last_end else last_end + RATE // 5
        cut = quiet_point(audio, last_end - _EDGE, min(nxt + _EDGE, end - self.min_tail))
        return cut if end - cut >= self.min_tail else None


def quiet_point(audio: np.ndarray, lo: int, hi: int) -> int:
    """The start of the quietest 10 ms of `audio[lo:hi]` (a pause between two words), or `lo`
    if the span is shorter than 10 ms."""
    lo = max(0, lo)
    hi = min(len(audio), hi)
    n = (hi - lo) // _FRAME
    if n <= 0:
        return max(0, min(lo, len(audio)))
    energy = np.square(audio[lo : lo + n * _FRAME].astype(np.float64)).reshape(n, _FRAME).mean(axis=1)
    return lo + int(np.argmin(energy)) * _FRAME
