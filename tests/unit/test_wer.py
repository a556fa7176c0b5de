"""loadtest.wer: text normalisation and (corpus) word error rate."""

from __future__ import annotations

import pytest

from kombain.loadtest.wer import edit_distance, normalize, number_words, wer


def test_normalize_digits_case_and_punctuation() -> None:
    assert normalize("10 of Clubs.") == ["ten", "of", "clubs"]


@pytest.mark.parametrize(
    ("n", "words"),
    [(0, "zero"), (7, "seven"), (13, "thirteen"), (20, "twenty"), (42, "forty two"), (99, "ninety nine"),
     (100, "one hundred"), (305, "three hundred five"), (999, "nine hundred ninety nine")],
)
def test_number_words(n: int, words: str) -> None:
    assert number_words(n) == words


def test_normalize_numbers_inside_text() -> None:
    assert normalize("I have 42 cats") == ["i", "have", "forty", "two", "cats"]
    assert normalize("room 7B") == ["room", "seven", "b"]
    # Hyphenated number words and digits compare equal.
    assert normalize("twenty-one") == normalize("21") == ["twenty", "one"]


def test_normalize_keeps_apostrophes_drops_other_punctuation() -> None:
    assert normalize("Don't stop, it's \"fine\"!") == ["don't", "stop", "it's", "fine"]
    assert normalize("  ...  ") == []


def test_edit_distance() -> None:
    assert edit_distance([], []) == 0
    assert edit_distance(["a"], []) == 1
    assert edit_distance([], ["a", "b"]) == 2
    assert edit_distance(list("abcd"), list("abxd")) == 1
    assert edit_distance(list("abcd"), list("acd")) == 1
    assert edit_distance(list("kitten"), list("sitting")) == 3


def test_wer_identical_is_zero() -> None:
    assert wer([("the quick brown fox", "the quick brown fox")]) == 0.0
    # After normalisation, digits vs words and punctuation/case differences do not count.
    assert wer([("10 of Clubs.", "ten of clubs")]) == 0.0


def test_wer_one_substitution_in_four_words() -> None:
    assert wer([("the quick brown fox", "the quick brown box")]) == pytest.approx(0.25)


def test_wer_insertions_and_deletions() -> None:
    assert wer([("a b c d", "a b c d e f")]) == pytest.approx(0.5)
    assert wer([("a b c d", "a")]) == pytest.approx(0.75)


def test_corpus_wer_sums_edits_over_reference_words() -> None:
    pairs = [("a b c d", "a b c x"), ("e f", "e f g h"), ("one two three four five six", "one two three four five six")]
    # (1 + 2 + 0) edits / (4 + 2 + 6) reference words; not the mean of per-utterance WERs.
    assert wer(pairs) == pytest.approx(3 / 12)
    assert wer(pairs) != pytest.approx((1 / 4 + 2 / 2 + 0) / 3)


def test_wer_empty_reference() -> None:
    assert wer([]) == 0.0
    assert wer([("", "hello there")]) == 2.0  # edits over max(words, 1)


def test_large_numbers_are_not_dropped() -> None:
    assert normalize("in 1999") != ["in"]
    assert wer([("in 1999", "in 2024")]) > 0


def test_spellings_of_the_same_words_and_hesitations_do_not_count() -> None:
    assert normalize("Mr. Dashwood") == ["mister", "dashwood"]
    assert normalize("we're gonna tackle") == normalize("we're going to tackle")
    assert normalize("kinda our fears") == ["kind", "of", "our", "fears"]
    assert normalize("Uh, with only like four games, um") == ["with", "only", "like", "four", "games"]
    assert wer([("uh and this was the first time", "And this was the first time.")]) == 0.0
    # "ah" and "er" are not dropped: they can be words a recogniser made up.
    assert normalize("ah er") == ["ah", "er"]


def test_british_tre_spellings_are_the_american_ones() -> None:
    assert normalize("Go forward ten metres.") == normalize("go forward ten meters")
    assert normalize("a litre in the centre") == ["a", "liter", "in", "the", "center"]
    assert normalize("tre") == ["tre"]
