"""TextChunker: pure, fed like an LLM stream, no event loop."""

from __future__ import annotations

import random

import pytest

from kombain.streaming.chunker import ChunkerConfig, TextChunker, speakable


def chunk_all(text: str, piece: int | None = None, config: ChunkerConfig | None = None) -> list[str]:
    """Feed `text` in pieces of `piece` characters (whole if None), then flush."""
    c = TextChunker(config)
    out: list[str] = []
    if piece is None:
        out += c.push(text)
    else:
        for i in range(0, len(text), piece):
            out += c.push(text[i : i + piece])
    return out + c.flush()


def test_first_chunk_is_first_clause_then_sentences() -> None:
    text = "Sure thing, I can help with that. The weather today is sunny, warm and dry. Bring water."
    assert chunk_all(text) == [
        "Sure thing,",
        "I can help with that.",
        "The weather today is sunny, warm and dry.",
        "Bring water.",
    ]


def test_same_chunks_however_the_text_is_split() -> None:
    text = (
        "Well, Dr. Smith measured 3.5 kg at 10:30 a.m. on the first day; 1,000 people saw it. "
        "Then e.g. the U.S. team arrived — and cheered! Was it real? Yes."
    )
    whole = chunk_all(text)
    for piece in (1, 2, 3, 5, 7):
        assert chunk_all(text, piece) == whole
    rng = random.Random(4)
    c = TextChunker()
    out: list[str] = []
    i = 0
    while i < len(text):
        n = rng.randint(1, 6)
        out += c.push(text[i : i + n])
        i += n
    assert out + c.flush() == whole


def test_abbreviations_decimals_and_numbers_stay_intact() -> None:
    chunks = chunk_all(
        "Okay then, so. Dr. Smith paid $3.50 for 1,000 apples at 10:30 a.m. today. Mrs. Jones did not."
    )
    joined = " | ".join(chunks)
    for keep in ("Dr. Smith", "$3.50", "1,000", "10:30", "a.m. today", "Mrs. Jones"):
        assert keep in joined
        assert sum(keep in c for c in chunks) == 1


def test_no_boundary_decided_before_the_next_character_arrives() -> None:
    c = TextChunker()
    assert c.push("It costs 3.") == []
    assert c.push("5 dollars, more or less") == ["It costs 3.5 dollars,"]


def test_period_followed_by_lower_case_is_not_a_sentence_end() -> None:
    c = TextChunker()
    c.push("Hello there, friend. ")
    assert c.push("We use approx. five cups. Next") == ["friend.", "We use approx. five cups."]


def test_first_chunk_cut_after_a_few_words_when_no_punctuation() -> None:
    c = TextChunker(ChunkerConfig(first_max_words=6))
    assert c.push("one two three four five") == []
    assert c.push(" six") == []  # "six" might continue ("sixty")
    assert c.push(" seven eight") == ["one two three four five six"]


def test_single_short_word_first_clause_waits_for_more() -> None:
    assert chunk_all("Yes, I can do that. Sure.") == ["Yes, I can do that.", "Sure."]
    assert chunk_all("Hi! How are you?") == ["Hi!", "How are you?"]


def test_later_chunks_are_whole_sentences_unless_long() -> None:
    cfg = ChunkerConfig(later_min_chars=40, later_soft_chars=80, max_chars=120)
    long_sentence = (
        "This sentence keeps going with many words, more words than fit comfortably in one breath, "
        "and still it goes on and on, without a stop in sight for quite a while longer"
    )
    chunks = chunk_all("First, then. " + long_sentence + ".", config=cfg)
    assert chunks[0] == "First, then."
    assert all(len(ch) <= 120 for ch in chunks)
    assert " ".join(chunks[1:]) == long_sentence + "."
    assert len(chunks) >= 3


def test_hard_cap_without_any_punctuation_or_spaces() -> None:
    cfg = ChunkerConfig(max_chars=50)
    chunks = chunk_all("a" * 130, config=cfg)
    assert [len(c) for c in chunks] == [50, 50, 30]
    words = chunk_all("Hello there, " + "word " * 60, config=cfg)
    assert all(len(c) <= 50 for c in words)
    assert all(not c.endswith("wor") for c in words)


def test_newlines_and_dashes_are_boundaries_and_whitespace_is_normalised() -> None:
    chunks = chunk_all("A list of things:\n- apples\n- pears\nThat is all—for now.")
    assert chunks[0] == "A list of things:"
    assert "apples" in chunks[1] and "\n" not in "".join(chunks)
    assert chunks[-1].endswith("for now.")


def test_punctuation_only_pieces_are_not_chunks() -> None:
    assert chunk_all("... !!! ---") == []
    assert chunk_all("Hello world, you. \"Quoted!\" ...")[-1] == '"Quoted!"'


def test_flush_and_reset() -> None:
    c = TextChunker()
    assert c.push("An unfinished thought") == []
    assert c.pending == "An unfinished thought"
    assert c.flush() == ["An unfinished thought"]
    assert c.flush() == []
    c.push("Fine, fine, okay. Then more")
    c.reset()
    assert c.pending == ""
    assert c.push("Short one, yes") == ["Short one,"]


@pytest.mark.parametrize("text", ["", "   ", "\n\n"])
def test_empty_input(text: str) -> None:
    assert chunk_all(text) == []


def test_text_is_cleaned_of_what_the_synthesiser_cannot_take() -> None:
    # A NUL ended the phonemizer ("embedded null character") and a lone surrogate is not UTF-8.
    assert speakable("hello\x00world\x1e\x7f\x85!\ud800") == "hello world   !" + " "
    assert speakable("tab\tand\nlines\r stay") == "tab\tand\nlines\r stay"
    assert chunk_all("Say hello\x00world, then stop\x01.") == ["Say hello world,", "then stop ."]
