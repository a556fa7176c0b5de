"""The word measures of the speech-to-text load test (pure logic on made-up event streams)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from kombain.loadtest.stt_words import (
    COMPLETED,
    DELTA,
    stream_word_stats,
    turn_stats,
    turns_seen,
    words_of,
)


@dataclass
class Ev:
    t: float
    event: dict[str, Any]


def stream(item: str, start_ms: int, deltas: list[tuple[float, str]], final: tuple[float, str]) -> list[Ev]:
    out = [Ev(0.0, {"type": "input_audio_buffer.speech_started", "item_id": item, "audio_start_ms": start_ms})]
    out += [Ev(t, {"type": DELTA, "item_id": item, "delta": d}) for t, d in deltas]
    out.append(Ev(final[0], {"type": COMPLETED, "item_id": item, "transcript": final[1]}))
    return out


REF = [("ten", 0.40), ("of", 0.55), ("clubs", 0.90)]  # word ends in the clip


def test_words_shown_early_lag_from_their_delta_and_the_rest_from_the_final() -> None:
    (turn,) = turns_seen(stream("a", 1000, [(1.70, "Ten of")], (2.50, "Ten of clubs.")))
    s = turn_stats(turn, REF, offset_s=1.0, chunk_s=0.02)
    assert (s.final_words, s.early_words, s.rewrites, s.turns_with_partials) == (3, 2, 0, 1)
    # "ten" sent at 1.40 s and shown at 1.70; "of" 1.56 -> 1.70; "clubs" 1.90 -> the final at 2.50.
    assert s.lags == pytest.approx([0.30, 0.14, 0.60])
    assert s.eos_final == pytest.approx([0.60])


def test_a_final_that_contradicts_shown_words_is_a_rewrite() -> None:
    (turn,) = turns_seen(stream("a", 0, [(1.0, "How do you"), (1.4, "marry the more")],
                                (3.0, "Had he married a more amiable woman")))
    s = turn_stats(turn, [("had", 0.3), ("he", 0.5), ("married", 0.9)], offset_s=0.0, chunk_s=0.02)
    assert s.rewrites == 1 and s.examples == [("how do you marry the more", "had he married a more amiable woman")]
    assert s.early_words == 1  # only "more" is both shown and in the final, in order


def test_no_partials_no_rewrite_and_turns_go_to_the_clip_they_started_in() -> None:
    events = stream("a", 500, [], (2.0, "ten of clubs")) + stream("b", 4200, [(5.0, "go")], (6.0, "Go forward."))
    refs = [REF, [("go", 0.3), ("forward", 0.8)]]
    s = stream_word_stats(events, refs, offsets=[0.5, 4.0], chunk_s=0.02)
    assert (s.final_words, s.early_words, s.turns_with_partials, s.rewrites) == (5, 1, 1, 0)
    assert s.eos_final == pytest.approx([2.0 - 1.40, 6.0 - 4.80])
    assert s.summary()["shown_early"] == 0.2


def test_words_of_keeps_digits_and_apostrophes() -> None:
    assert words_of("It's 10 o\u2019clock, Mr. Gregson!") == ["it's", "10", "o'clock", "mr", "gregson"]
