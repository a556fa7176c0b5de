"""Where a recording has speech (Silero VAD over the whole file), and word times moved onto it.

Whisper's cross-attention alignment puts a word's edges within a few hundred milliseconds:
the first word after a silence often starts inside the silence, the last one ends after the
speech. Snapping each edge that falls in a silence onto the nearest speech edge, as stable-ts's
`suppress_silence` does, brings them to within a Silero frame (32 ms) of the speech
(docs/performance.md, "Word timestamps").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from kombain.streaming.vad import FRAME_SAMPLES, SileroVadModel
from kombain.streaming.whisper_runtime import Segment, Word

FRAME_S = FRAME_SAMPLES / 16000


def speech_probabilities(model: SileroVadModel, audio: np.ndarray) -> np.ndarray:
    """One Silero speech probability per 32 ms frame of 16 kHz audio (blocking: run it in a thread)."""
    stream = model.new_stream()
    probs = []
    for i in range(0, len(audio), 16000 * 60):  # a minute at a time: bounded temporary buffers
        probs.extend(stream.process(audio[i : i + 16000 * 60]))
    return np.asarray(probs, dtype=np.float32)


def speech_regions(probs: np.ndarray, on: float = 0.5, off: float = 0.35, min_silence_s: float = 0.1,
                   min_speech_s: float = 0.06) -> list[tuple[float, float]]:
    """(start s, end s) of speech: starts where the probability passes `on`, ends where it stays
    under `off` for `min_silence_s`; regions shorter than `min_speech_s` are dropped."""
    regions: list[tuple[float, float]] = []
    start: int | None = None
    quiet = 0
    need_quiet = max(1, round(min_silence_s / FRAME_S))
    for i, p in enumerate(probs):
        if start is None:
            if p >= on:
                start, quiet = i, 0
            continue
        quiet = quiet + 1 if p < off else 0
        if quiet >= need_quiet:
            regions.append((start * FRAME_S, (i - quiet + 1) * FRAME_S))
            start = None
    if start is not None:
        regions.append((start * FRAME_S, (len(probs) - quiet) * FRAME_S))
    return [(a, b) for a, b in regions if b - a >= min_speech_s]


def snap_words(segments: Sequence[Segment], regions: Sequence[tuple[float, float]]) -> tuple[Segment, ...]:
    """Word edges moved onto the speech: a start in a silence moves on to the speech onset, a
    start after an onset no earlier word reaches moves back to it; ends likewise. A word wholly
    in silence is left alone; segment edges follow their words."""
    words = [w for seg in segments for w in seg.words]
    if not regions or not words:
        return tuple(segments)
    starts = np.array([a for a, _ in regions])
    ends = np.array([b for _, b in regions])
    moved: list[Word] = []
    for k, w in enumerate(words):
        start, end = w.start, w.end
        prev_end = moved[-1].end if moved else -1.0
        next_start = words[k + 1].start if k + 1 < len(words) else float("inf")
        i = int(np.searchsorted(ends, start, side="right"))  # the first region ending after the start
        if i < len(regions):
            if start < starts[i] < end:
                start = float(starts[i])  # the start lies in a silence: on to the speech onset
            elif starts[i] <= start and starts[i] >= prev_end:
                start = float(starts[i])  # speech no earlier word covers: it begins this word
        j = int(np.searchsorted(starts, end, side="left")) - 1  # the last region starting before the end
        if j >= 0:
            if start < ends[j] < end:
                end = float(ends[j])  # the end lies in a silence: back to the speech offset
            elif ends[j] >= end and ends[j] <= next_start:
                end = float(ends[j])  # speech no later word covers: it ends this word
        moved.append(replace(w, start=start, end=max(end, start)) if (start, end) != (w.start, w.end) else w)
    out = []
    it = iter(moved)
    for seg in segments:
        mine = tuple(next(it) for _ in seg.words)
        out.append(replace(seg, words=mine, start=mine[0].start, end=mine[-1].end) if mine else seg)
    return tuple(out)


def refine_word_times(model: SileroVadModel, audio: np.ndarray, segments: Sequence[Segment]) -> tuple[Segment, ...]:
    """`snap_words` onto the speech Silero finds in `audio` (blocking: run it in a thread)."""
    return snap_words(segments, speech_regions(speech_probabilities(model, audio)))
