"""Guards against Whisper's known failure modes on non-speech: pure functions over decode output."""

from __future__ import annotations

import re

import numpy as np

NO_SPEECH_PROB = 0.6
LOW_LOGPROB = -1.0
MAX_COMPRESSION_RATIO = 2.4
_LOOP_MIN_REPEATS = 4  # an n-gram said this many times in a row is a decoder loop, not speech
_NON_SPEECH = re.compile(r"^\s*[\[\(\*♪].*[\]\)\*♪]\s*$")  # "[Music]", "(silence)", "♪ ♪"


def keep_segment(text: str, no_speech_prob: float, avg_logprob: float, compression_ratio: float) -> bool:
    """Whether a decoded segment is speech worth reporting as it is."""
    return speech_like(text, no_speech_prob, avg_logprob) and not looks_like_loop(compression_ratio)


def speech_like(text: str, no_speech_prob: float, avg_logprob: float) -> bool:
    """Whether a decoded segment says something that speech may have said (its length aside)."""
    if not re.search(r"\w", text) or _NON_SPEECH.match(text):
        return False  # empty, punctuation only ("...", "."), or a bracketed sound label
    return not (no_speech_prob > NO_SPEECH_PROB and avg_logprob < LOW_LOGPROB)


def looks_like_loop(compression_ratio: float) -> bool:
    """A transcript that compresses this well repeats itself: a decoder loop, or audio that repeats.

    Which of the two is told by decoding the audio again in shorter pieces (`quiet_split`):
    speech that really repeats reads normally in each piece; a loop goes on looping.
    """
    return compression_ratio > MAX_COMPRESSION_RATIO


def quiet_split(audio: np.ndarray, rate: int = 16000, frame_s: float = 0.05) -> int:
    """Where to cut `audio` in two: the start of its quietest frame in the middle half (a pause
    between words, where there is one), so no word is cut in half."""
    frame = max(1, int(rate * frame_s))
    n = len(audio) // frame
    if n < 4:
        return len(audio) // 2
    energy = np.square(audio[: n * frame].astype(np.float32)).reshape(n, frame).mean(axis=1)
    lo, hi = n // 4, n - n // 4
    return (lo + int(np.argmin(energy[lo:hi]))) * frame


def cut_repetition_loops(text: str, max_n: int = 8) -> str:
    """Collapse an n-gram repeated `_LOOP_MIN_REPEATS`+ times in a row into a single occurrence
    (and drop a last, unfinished repeat that ends the text)."""
    words = text.split()
    changed = True
    while changed:
        changed = False
        for n in range(1, max_n + 1):
            i = 0
            while i + n * _LOOP_MIN_REPEATS <= len(words):
                gram = [w.lower().strip(",.!?") for w in words[i : i + n]]
                reps = 1
                while words[i + reps * n : i + (reps + 1) * n] and [
                    w.lower().strip(",.!?") for w in words[i + reps * n : i + (reps + 1) * n]
                ] == gram:
                    reps += 1
                if reps >= _LOOP_MIN_REPEATS:
                    rest = words[i + reps * n :]
                    if len(rest) < n and [w.lower().strip(",.!?") for w in rest] == gram[: len(rest)]:
                        rest = []  # the loop cut off mid-repeat where the decoder hit its length cap
                    words = words[: i + n] + rest
                    changed = True
                i += 1
    return " ".join(words)
