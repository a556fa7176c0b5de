"""streaming.stabilizer: LocalAgreement-2 over successive partial decodes, and finals kept consistent with them."""

from __future__ import annotations

import pytest

from kombain.streaming.stabilizer import Stabilizer, keep_shown


def test_first_hypothesis_publishes_nothing() -> None:
    s = Stabilizer()
    assert s.update("hello world how are") == ""
    assert s.published == []


def test_second_hypothesis_publishes_agreed_prefix() -> None:
    s = Stabilizer()
    s.update("hello world how")
    assert s.update("hello world who are you") == "hello world"
    assert s.published == ["hello", "world"]


def test_subsequent_publications_are_space_prefixed_deltas() -> None:
    s = Stabilizer()
    s.update("the quick")
    assert s.update("the quick brown") == "the quick"
    assert s.update("the quick brown fox") == " brown"
    assert s.update("the quick brown fox jumps") == " fox"
    assert s.published == ["the", "quick", "brown", "fox"]


def test_no_agreement_publishes_nothing() -> None:
    s = Stabilizer()
    s.update("hello there")
    assert s.update("yellow there") == ""
    assert s.published == []


def test_agreement_is_case_and_punctuation_insensitive() -> None:
    s = Stabilizer()
    s.update("Hello, world")
    out = s.update("hello world. How")
    # Both words agree; the newest hypothesis' spelling is what gets published.
    assert out == "hello world."
    assert s.published == ["hello", "world."]
    # Apostrophes are part of the word: "it's" and "its" differ.
    s2 = Stabilizer()
    s2.update("it's fine")
    assert s2.update("its fine") == ""


def test_published_text_only_grows() -> None:
    s = Stabilizer()
    hyps = [
        "so",
        "so I",
        "so I went",
        "so I want to",        # "went" -> "want": agreement shrinks
        "so I want to go",
        "so I went to go",     # flickers back
        "so I want to go home",
        "so I want to go home now",
        "so I want to go home now",
    ]
    emitted = ""
    history: list[list[str]] = []
    for h in hyps:
        delta = s.update(h)
        emitted += delta
        history.append(list(s.published))
    for before, after in zip(history, history[1:], strict=False):
        assert after[: len(before)] == before
    assert emitted == " ".join(s.published)
    assert len(history[-1]) > len(history[2])
    assert history[-1] == "so I want to go home now".split()


def test_changed_earlier_word_blocks_further_publication() -> None:
    s = Stabilizer()
    s.update("hello world how")
    assert s.update("hello world how are") == "hello world how"
    # An earlier, already-published word changes; later words agree between the last two decodes,
    # but nothing is published until the published prefix matches again.
    assert s.update("hello word how are you") == ""
    assert s.update("hello word how are you doing") == ""
    assert s.published == ["hello", "world", "how"]
    # Once the decodes agree with what was published again, publication resumes.
    s.update("hello world how are you doing")
    assert s.update("hello world how are you doing today") == " are you doing"
    assert s.published == "hello world how are you doing".split()


def test_shorter_hypothesis_does_not_unpublish() -> None:
    s = Stabilizer()
    s.update("one two three")
    s.update("one two three four")
    assert s.published == ["one", "two", "three"]
    assert s.update("one") == ""
    assert s.update("one") == ""
    assert s.published == ["one", "two", "three"]


def test_reset() -> None:
    s = Stabilizer()
    s.update("a b c")
    s.update("a b c d")
    assert s.published
    s.reset()
    assert s.published == []
    # After a reset the previous hypothesis is forgotten too: the next decode publishes nothing.
    assert s.update("a b c d") == ""
    assert s.update("a b c d") == "a b c d"


@pytest.mark.parametrize(
    ("shown", "final", "kept"),
    [
        (["4"], "four queen of clubs", "4 queen of clubs"),  # the shown spelling wins
        (["4", "queen"], "Four queen of clubs.", "4 queen of clubs."),
        (["eight", "of", "spades,", "four", "of"], "8 of spades, 4 of clubs, 7 of hearts.",
         "eight of spades, four of clubs, seven of hearts."),  # later digits follow the shown words
        (["Twenty-five"], "25 cents.", "Twenty-five cents."),
        (["no", "one"], "No 1 came.", "No one came."),
        (["4"], "4 of clubs, 7 of hearts", "4 of clubs, 7 of hearts"),
        ([], "25 cents.", "25 cents."),  # nothing shown: as decoded
        (["How", "do", "you"], "Had he married a more amiable woman",
         "Had he married a more amiable woman"),  # a real disagreement is not hidden
        (["4", "queen", "of"], "four king of 7 spades", "4 king of 7 spades"),  # stops at the first
        (["100"], "one hundred", "one hundred"),  # only 0-99 are matched
    ],
)
def test_keep_shown_spells_numbers_as_already_shown(shown: list[str], final: str, kept: str) -> None:
    assert keep_shown(shown, final) == kept


def test_a_number_agrees_with_itself_written_the_other_way() -> None:
    """Whisper writes '8' in one decode and 'eight' in the next; that is agreement, not a change."""
    s = Stabilizer()
    assert s.update("eight of spades four") == ""
    assert s.update("8 of spades, 4 of") == "8 of spades, 4"
    assert s.update("eight of spades four of clubs") == " of"
    assert s.published == ["8", "of", "spades,", "4", "of"]
    assert keep_shown(s.published, "Eight of spades, four of clubs.") == "8 of spades, 4 of clubs."
