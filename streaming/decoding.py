"""What a speech-to-text decode is asked and answers, whatever the engine: the options, the
result with its segments and words, the queue's refusal, and the kinds of decode."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

Kind = Literal["final", "partial", "offline"]


class RuntimeBusy(RuntimeError):
    """The queue is full: the request was refused rather than queued without bound."""


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    language: str | None = None
    prompt: str | None = None
    beam_size: int = 1
    # Live decodes: encoder window = audio + pad, at least min_window seconds (see docs/performance.md).
    # Whisper is trained on 30 s windows; a short window cuts encoder cost several-fold.
    # Below ~10 s the decoder loops (repeats the transcript) on short clips, so 10 s is the floor.
    window_pad: float = 2.0
    min_window: float = 10.0
    timestamps: bool = False
    vad_filter: bool = False
    # Per-word times from the cross-attention alignment (faster-whisper's word_timestamps on
    # files; the same alignment after a live decode), and Whisper's task (files only).
    word_timestamps: bool = False
    task: Literal["transcribe", "translate"] = "transcribe"
    # Live decodes: words the transcript is forced to start with (a windowed partial's committed
    # words inside its window, streaming/partial_window.py); the result's text includes them.
    prefix: str | None = None


@dataclass(frozen=True, slots=True)
class Word:
    word: str  # as decoded, with its leading space
    start: float
    end: float
    probability: float


@dataclass(frozen=True, slots=True)
class Segment:
    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    words: tuple[Word, ...] = ()


@dataclass(frozen=True, slots=True)
class DecodeResult:
    text: str
    segments: tuple[Segment, ...]
    language: str
    duration: float
    inference_seconds: float


def shifted(seg: Segment, by: float) -> Segment:
    """`seg` (and its words) `by` seconds later: a piece's times on its whole audio's clock."""
    if not by:
        return seg
    words = tuple(dataclasses.replace(w, start=w.start + by, end=w.end + by) for w in seg.words)
    return dataclasses.replace(seg, start=seg.start + by, end=seg.end + by, words=words)


def batchable(a: DecodeOptions, b: DecodeOptions) -> bool:
    """Live decodes that can share a batch: the same options but for the text of their prompt
    (each item has its own; whether it has one must be the same), their forced prefix and word
    times (a batch with one item asking for them aligns them all: a windowed partial asks now and
    then)."""
    def key(o: DecodeOptions) -> DecodeOptions:
        return dataclasses.replace(o, prompt="-" if o.prompt else None, prefix=None, word_timestamps=False)

    return key(a) == key(b)
