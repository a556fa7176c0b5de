"""The transcript cue of semantic_vad (pure logic)."""

from __future__ import annotations

import pytest

from kombain.streaming.end_of_turn import complete_probability, last_word


@pytest.mark.parametrize("text", ["and you always want to", "I went to the", "Um", "so, because"])
def test_a_word_no_sentence_ends_on_caps_the_model(text: str) -> None:
    assert complete_probability(0.9, text) == 0.1


@pytest.mark.parametrize("text", ["and you always want to see...", "and you always want to see\u2026",
                                  "I was thinking,", "Go forward -", "Go forward\u2014 "])
def test_speech_that_trails_off_caps_the_model(text: str) -> None:
    """Whisper's ellipsis, comma or dash at the end: the speaker was cut short, not finished
    (a 0.8 s pause after "want to see..." scored 0.66 and split the sentence)."""
    assert complete_probability(0.66, text) == 0.1


@pytest.mark.parametrize("text", ["It in the superlative degree.", "Ten of clubs", "Is it?", "", None])
def test_otherwise_the_model_decides(text: str | None) -> None:
    assert complete_probability(0.66, text) == 0.66
    assert complete_probability(0.05, text) == 0.05


def test_last_word() -> None:
    assert last_word("Wait, what's THAT?") == "that"
    assert last_word("...") is None and last_word(None) is None


def test_numbers_are_words_and_sentences_may_end_on_a_verb_or_you() -> None:
    from kombain.streaming.end_of_turn import complete_probability

    assert complete_probability(0.9, "A table for 4.") == 0.9  # ends on "4", not on "for"
    assert complete_probability(0.9, "The league for 2020.") == 0.9
    assert complete_probability(0.98, "Thank you.") == 0.98
    assert complete_probability(0.98, "He was richer than he was.") == 0.98
    assert complete_probability(0.9, "And you always want to") == 0.1
    assert complete_probability(0.9, "I'd like a table for") == 0.1
