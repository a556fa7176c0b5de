"""streaming.hallucination: decoder-loop cutting and non-speech segment filtering."""

from __future__ import annotations

import numpy as np
import pytest

from kombain.streaming.hallucination import (
    LOW_LOGPROB,
    NO_SPEECH_PROB,
    cut_repetition_loops,
    keep_segment,
    looks_like_loop,
    quiet_split,
    speech_like,
)

# --- cut_repetition_loops -------------------------------------------------------------------------

def test_trigram_repeated_six_times_collapses_to_one() -> None:
    assert cut_repetition_loops(" ".join(["10 of clubs"] * 6)) == "10 of clubs"


def test_loop_inside_sentence_keeps_surrounding_words() -> None:
    text = "I drew the " + " ".join(["10 of clubs"] * 6) + " and then stopped"
    assert cut_repetition_loops(text) == "I drew the 10 of clubs and then stopped"


def test_exactly_four_repeats_is_a_loop() -> None:
    assert cut_repetition_loops("no no no no") == "no"
    assert cut_repetition_loops("thank you thank you thank you thank you") == "thank you"


@pytest.mark.parametrize(
    "text",
    [
        "five five",
        "no no no",
        "it was five five five dollars",
        "thank you thank you thank you",
        "I said no no no to that",
        "the cat sat on the mat",
        "",
    ],
)
def test_legit_repeats_are_kept(text: str) -> None:
    assert cut_repetition_loops(text) == text


def test_repetition_is_case_and_punctuation_insensitive() -> None:
    assert cut_repetition_loops("No, no, no, no. okay") == "No, okay"
    assert cut_repetition_loops("Go go GO go!") == "Go"


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_ngrams_up_to_eight(n: int) -> None:
    gram = [f"w{i}" for i in range(n)]
    text = "start " + " ".join(gram * 5) + " end"
    assert cut_repetition_loops(text) == "start " + " ".join(gram) + " end"


def test_ngram_longer_than_max_n_is_not_touched() -> None:
    gram = " ".join(f"w{i}" for i in range(9))
    text = " ".join([gram] * 4)
    assert cut_repetition_loops(text) == text
    assert cut_repetition_loops(text, max_n=9) == gram


def test_several_loops_are_all_cut() -> None:
    text = " ".join(["la"] * 10) + " chorus " + " ".join(["oh yeah"] * 5)
    assert cut_repetition_loops(text) == "la chorus oh yeah"


# --- keep_segment ---------------------------------------------------------------------------------

NORMAL = dict(no_speech_prob=0.05, avg_logprob=-0.2, compression_ratio=1.3)


def test_keeps_normal_speech() -> None:
    assert keep_segment("The quick brown fox jumps over the lazy dog.", **NORMAL) is True


@pytest.mark.parametrize(
    "text", ["[Music]", " [BLANK_AUDIO] ", "(silence)", "♪ ♪", "♪ la la la ♪", "*laughs*", "", "   "]
)
def test_drops_non_speech_markers(text: str) -> None:
    assert keep_segment(text, **NORMAL) is False


@pytest.mark.parametrize("text", ["[Music] starts now", "I heard (something) outside", "C'est la vie ♪"])
def test_keeps_text_that_only_contains_brackets(text: str) -> None:
    assert keep_segment(text, **NORMAL) is True


def test_drops_high_no_speech_with_low_logprob() -> None:
    assert keep_segment("Thank you.", no_speech_prob=0.9, avg_logprob=-1.5, compression_ratio=1.0) is False


def test_high_no_speech_alone_or_low_logprob_alone_is_kept() -> None:
    assert keep_segment("Thank you.", no_speech_prob=0.9, avg_logprob=-0.3, compression_ratio=1.0) is True
    assert keep_segment("Thank you.", no_speech_prob=0.1, avg_logprob=-1.5, compression_ratio=1.0) is True
    # Thresholds are strict: exactly 0.6 / -1.0 is not over the line.
    assert keep_segment("Thank you.", no_speech_prob=0.6, avg_logprob=-1.5, compression_ratio=1.0) is True
    assert keep_segment("Thank you.", no_speech_prob=0.9, avg_logprob=-1.0, compression_ratio=1.0) is True


def test_drops_high_compression_ratio() -> None:
    assert keep_segment("la la la la la la la", no_speech_prob=0.0, avg_logprob=-0.1, compression_ratio=3.0) is False
    assert keep_segment("normal words", no_speech_prob=0.0, avg_logprob=-0.1, compression_ratio=2.4) is True
    assert keep_segment("normal words", no_speech_prob=0.0, avg_logprob=-0.1, compression_ratio=2.41) is False


# --- telling a decoder loop from speech that repeats ----------------------------------------------

def test_loop_judged_on_compression_ratio_alone() -> None:
    assert looks_like_loop(2.81) and not looks_like_loop(2.4) and not looks_like_loop(1.2)
    # speech_like says nothing of the ratio: repeated speech is still speech-like
    assert speech_like("ten of clubs ten of clubs", 0.1, -0.3)
    assert keep_segment("ten of clubs ten of clubs", 0.1, -0.3, 2.81) is False


@pytest.mark.parametrize("text", ["", "...", "[Music]", "(silence)", "♪ ♪"])
def test_non_speech_text_is_not_speech_like(text: str) -> None:
    assert not speech_like(text, 0.0, -0.1)


def test_unsure_silence_is_not_speech_like() -> None:
    assert not speech_like("thank you", NO_SPEECH_PROB + 0.1, LOW_LOGPROB - 0.1)
    assert speech_like("thank you", NO_SPEECH_PROB + 0.1, LOW_LOGPROB + 0.5)


def test_quiet_split_cuts_in_the_pause_between_words() -> None:
    rng = np.random.default_rng(0)
    rate = 16000
    word = rng.normal(0, 0.2, rate).astype(np.float32)
    pause = np.zeros(rate // 5, np.float32)
    audio = np.concatenate([word, word, pause, word])  # pause at 2.0-2.2 s, in the middle half
    cut = quiet_split(audio, rate)
    assert 2 * rate <= cut < 2 * rate + len(pause)


def test_quiet_split_without_a_pause_stays_in_the_middle_half() -> None:
    audio = np.random.default_rng(1).normal(0, 0.2, 16000 * 8).astype(np.float32)
    cut = quiet_split(audio)
    assert len(audio) // 4 - 800 <= cut <= 3 * len(audio) // 4
    assert quiet_split(np.ones(10, np.float32)) == 5


def test_unfinished_last_repeat_of_a_loop_is_dropped() -> None:
    # A decoder loop ends where the length cap cuts it, often mid-repeat.
    assert cut_repetition_loops("10 of clubs 10 of clubs 10 of clubs 10 of clubs 10 of") == "10 of clubs"
    assert cut_repetition_loops("10 of clubs 10 of clubs 10 of clubs 10 of clubs 10 of hearts") == (
        "10 of clubs 10 of hearts")
