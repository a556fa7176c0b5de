"""Word edges moved onto speech regions (pure logic)."""

from __future__ import annotations

import numpy as np

from kombain.streaming.speech_regions import FRAME_S, snap_words, speech_regions
from kombain.streaming.whisper_runtime import Segment, Word


def seg(*words: tuple[str, float, float]) -> Segment:
    ws = tuple(Word(w, a, b, 0.9) for w, a, b in words)
    return Segment(ws[0].start, ws[-1].end, " ".join(w for w, _, _ in words), -0.1, 0.01, 1.0, ws)


def test_regions_hysteresis():
    probs = np.array([0.1] * 10 + [0.9] * 20 + [0.4] * 3 + [0.9] * 5 + [0.1] * 10, np.float32)
    regions = speech_regions(probs)
    # a dip to 0.4 stays speech (over the off threshold); the region ends where it stays under it
    assert len(regions) == 1
    assert abs(regions[0][0] - 10 * FRAME_S) < 1e-6 and abs(regions[0][1] - 38 * FRAME_S) < 1e-6
    assert speech_regions(np.zeros(50, np.float32)) == []


def test_snap_into_speech():
    regions = [(1.0, 2.0), (3.0, 4.0)]
    out = snap_words([seg(("a", 0.6, 1.3), ("b", 1.3, 2.4)), seg(("c", 3.2, 3.5), ("d", 3.5, 3.8))], regions)
    a, b = out[0].words
    c, d = out[1].words
    assert (a.start, a.end) == (1.0, 1.3)  # start in silence -> speech onset
    assert (b.start, b.end) == (1.3, 2.0)  # end in silence -> speech offset
    assert (c.start, d.end) == (3.0, 4.0)  # onset and offset no other word covers
    assert (out[0].start, out[0].end) == (1.0, 2.0)


def test_snap_leaves_words_in_silence():
    out = snap_words([seg(("x", 5.0, 5.5))], [(1.0, 2.0)])
    assert (out[0].words[0].start, out[0].words[0].end) == (5.0, 5.5)
    assert snap_words([], [(1.0, 2.0)]) == ()
