"""Guards against Whisper's known failure modes on non-speech: pure functions over decode output."""

from __future__ import annotations

import re

NO_SPEECH_PROB = 0.6
LOW_LOGPROB = -1.0
MAX_COMPRESSION_RATIO = 2.4
_LOOP_MIN_REPEATS = 4  # an n-gram said this many times in a row is a decoder loop, not speech
_NON_SPEECH = re.compile(r"^\s*[\[\(\*♪].*[\]\)\*♪]\s*$")  # "[Music]", "(silence)", "♪ ♪"


def keep_segment(text: str, no_speech_prob: float, avg_logprob: float, compression_ratio: float) -> bool:
    """Whether a decoded segment is speech worth reporting."""
    if not re.search(r"\w", text) or _NON_SPEECH.match(text):
        return False  # empty, punctuation only ("...", "."), or a bracketed sound label
    if no_speech_prob > NO_SPEECH_PROB and avg_logprob < LOW_LOGPROB:
        return False
    return compression_ratio <= MAX_COMPRESSION_RATIO


def cut_repetition_loops(text: str, max_n: int = 8) -> str:
    """Collapse an n-gram repeated `_LOOP_MIN_REPEATS`+ times in a row into a single occurrence."""
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
                    words = words[: i + n] + words[i + reps * n :]
                    changed = True
                i += 1
    return " ".join(words)
