"""streaming.partial_window: which words a long turn's partials settle, and what audio they decode next."""

from __future__ import annotations

import dataclasses

import numpy as np

from kombain.streaming.decoding import DecodeOptions, DecodeResult, Segment, Word
from kombain.streaming.partial_window import PartialWindow, quiet_point
from kombain.streaming.stabilizer import Stabilizer

RATE = 16000
# A read sentence: (word, start s, end s), a short pause after each word.
SENTENCE = [(w, 0.4 * i, 0.4 * i + 0.3) for i, w in enumerate(
    "he turned sharply and faced gregson across the table eight of spades".split())]


def speech(seconds: float) -> np.ndarray:
    """Loud where a word of SENTENCE is spoken, silent in the pauses between."""
    audio = np.zeros(int(seconds * RATE), np.float32)
    for _, start, end in SENTENCE:
        audio[int(start * RATE):int(end * RATE)] = 0.3
    return audio


def decode(start: int, end: int, options: DecodeOptions, times: bool = True) -> DecodeResult:
    """What an engine reads in audio[start:end]: the forced prefix, then the words spoken after it
    (a word whose audio is cut off at `end` is left out), times relative to the window when asked."""
    prefix = (options.prefix or "").split()
    spoken = [(w, s, e) for w, s, e in SENTENCE if e * RATE <= end and s * RATE >= start - RATE // 100]
    assert [w for w, _, _ in spoken[: len(prefix)]] == prefix, (prefix, start)
    times = times and options.word_timestamps
    words = tuple(Word(" " + w, s - start / RATE, e - start / RATE, 0.9) for w, s, e in spoken) if times else ()
    text = " ".join(w for w, _, _ in spoken)
    return DecodeResult(text, (Segment(0.0, (end - start) / RATE, text, -0.1, 0.01, 1.0, words),), "en",
                        (end - start) / RATE, 0.05)


def stream(window: PartialWindow, seconds: float, step_s: float = 0.2, times: bool = True):
    """Partials every `step_s` over `seconds` of the sentence, as the transcriber runs them."""
    stab = Stabilizer()
    audio = speech(seconds)
    plans = []
    for end in range(int(step_s * RATE), len(audio) + 1, int(step_s * RATE)):
        plan = window.plan(end, DecodeOptions(), stab.published)
        plans.append(plan)
        said = window.hypothesis(plan, decode(plan.start, end, plan.options, times))
        assert said is not None
        stab.update(said)
        window.settle(stab.published, audio[:end], end)
    return stab, plans


def test_a_long_turn_decodes_a_window_of_bounded_length_and_publishes_every_word_once() -> None:
    window = PartialWindow(min_tail_s=1.0, context_s=1.0)
    stab, plans = stream(window, 5.2)
    assert stab.published == [w for w, _, _ in SENTENCE]
    assert window.committed == stab.published[: len(window.committed)] and len(window.committed) >= 6
    late = [p for p in plans if p.end > 3 * RATE]
    assert late and all(p.start > 0 for p in late)
    # context + align_after + the time two decodes take to agree on a word, whatever the turn's length
    assert max(p.end - p.start for p in plans) <= 4.0 * RATE, [(p.end - p.start) / RATE for p in plans]


def test_the_window_starts_in_a_pause_with_the_committed_words_as_prefix_and_prompt() -> None:
    window = PartialWindow(min_tail_s=1.0, context_s=1.0)
    stab, _ = stream(window, 5.2)
    plan = window.plan(int(5.2 * RATE), DecodeOptions(prompt="Gregson"), stab.published)
    # the cut after each committed word is in the pause after it
    for word, bound in zip(window.committed, window.bounds, strict=True):
        _, start, end = next(w for w in SENTENCE if w[0] == word)
        assert round(end * RATE) <= bound <= round((end + 0.1) * RATE), (word, bound / RATE)
    assert plan.start in window.bounds and window.point - plan.start >= RATE
    inside = stab.published[plan.before:]  # committed words in the window, then the others published
    assert plan.options.prefix == " ".join(inside) and len(inside) > len(window.committed) - plan.before > 0
    assert plan.options.prompt == " ".join(["Gregson", *window.committed[:plan.before]])


def test_without_word_times_nothing_is_committed_and_partials_decode_the_whole_turn() -> None:
    window = PartialWindow()
    stab, plans = stream(window, 5.2, times=False)
    assert stab.published == [w for w, _, _ in SENTENCE] and not window.committed
    assert all(p.start == 0 for p in plans)


def test_a_decode_that_does_not_start_with_its_prefix_or_came_before_a_commit_is_dropped() -> None:
    window = PartialWindow(min_tail_s=1.0, context_s=1.0)
    stab, _ = stream(window, 5.2)
    end = int(5.2 * RATE)
    plan = window.plan(end, DecodeOptions(), stab.published)
    wrong = DecodeResult("something else entirely", (), "en", 1.0, 0.05)
    assert window.hypothesis(plan, wrong) is None
    right = decode(plan.start, end, plan.options)
    assert window.hypothesis(plan, right) == " ".join(stab.published)
    stale = window.plan(end, DecodeOptions(), stab.published)
    window.committed.append("table")  # a commit happened while `stale` was decoding
    assert window.hypothesis(stale, right) is None


def test_only_published_words_the_hypothesis_agrees_with_are_committed() -> None:
    window = PartialWindow(min_tail_s=0.5)
    audio = speech(3.0)
    end = 3 * RATE
    plan = window.plan(end, DecodeOptions())
    said = window.hypothesis(plan, decode(0, end, dataclasses.replace(plan.options, word_timestamps=True)))
    assert said is not None and said.startswith("he turned ")
    window.settle(["he", "learned", "sharply"], audio, end)  # published from an earlier decode
    assert window.committed == ["he"]


def test_a_cut_leaves_min_tail_of_audio_after_it() -> None:
    window = PartialWindow(min_tail_s=1.5)
    audio = speech(2.0)
    end = 2 * RATE
    plan = window.plan(end, DecodeOptions())
    said = window.hypothesis(plan, decode(0, end, dataclasses.replace(plan.options, word_timestamps=True)))
    assert said is not None
    window.settle(said.split(), audio, end)
    assert window.committed == ["he"] and end - window.point >= 1.5 * RATE


def test_word_times_are_asked_for_only_when_a_published_word_has_waited_to_be_committed() -> None:
    window = PartialWindow(min_tail_s=1.0, align_after_s=1.5)
    audio = speech(3.0)
    assert not window.plan(RATE, DecodeOptions()).options.word_timestamps  # nothing published yet
    window.settle(["he"], audio[:RATE], RATE)  # "he" first published by the decode up to 1.0 s
    assert not window.plan(int(2.4 * RATE), DecodeOptions()).options.word_timestamps
    assert window.plan(int(2.5 * RATE), DecodeOptions()).options.word_timestamps
    assert window.plan(RATE, DecodeOptions(word_timestamps=True)).options.word_timestamps  # the session's own ask


def test_a_word_published_wrongly_is_forced_so_the_decode_goes_on_after_it() -> None:
    window = PartialWindow()
    plan = window.plan(2 * RATE, DecodeOptions(), ["he", "learned"])  # "turned" was shown as "learned"
    assert plan.start == 0 and plan.options.prefix == "he learned"
    result = DecodeResult("he learned sharply and", (), "en", 2.0, 0.05)  # the decoder goes on after it
    assert window.hypothesis(plan, result) == "he learned sharply and"


def test_the_prefix_has_no_punctuation_after_its_last_word() -> None:
    window = PartialWindow(min_tail_s=0.5)
    window.committed, window.bounds = ["Across", "the", "table."], [4000, 8000, 12000]
    plan = window.plan(2 * RATE, DecodeOptions(), ["Across", "the", "table."])
    assert plan.options.prefix == "Across the table"
    assert window.plan(RATE, DecodeOptions(), ["7-"]).options.prefix == "7"
    assert window.plan(RATE, DecodeOptions(), ["Always..."]).options.prefix == "Always"


def test_a_new_turn_starts_from_nothing() -> None:
    window = PartialWindow(min_tail_s=1.0, context_s=1.0)
    stream(window, 5.2)
    window.reset()
    assert not window.committed and window.point == 0 and window.plan(RATE, DecodeOptions()).start == 0


def test_quiet_point_finds_the_pause() -> None:
    audio = np.full(RATE, 0.2, np.float32)
    audio[8000:8480] = 0.0
    assert 8000 <= quiet_point(audio, 6000, 10000) <= 8320
    assert quiet_point(audio, 100, 105) == 100  # shorter than a frame
    assert quiet_point(audio, -50, 20) == 0
