"""streaming.stabilizer: LocalAgreement-2 over successive partial decodes."""

from __future__ import annotations

from kombain.streaming.stabilizer import Stabilizer


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
    for before, after in zip(history, history[1:]):
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
