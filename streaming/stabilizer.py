"""Partial-transcript stabilisation: only words two consecutive decodes agree on are published,
and the final keeps the spelling of what was published where it says the same."""

from __future__ import annotations

import re


def _key(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


class Stabilizer:
    """LocalAgreement-2: the stable prefix is the longest common word prefix of the last two
    hypotheses. Published text only ever grows, so clients never see a partial flicker back."""

    def __init__(self) -> None:
        self._previous: list[str] = []
        self.published: list[str] = []

    def update(self, hypothesis: str) -> str:
        """Feed a new decode of the whole turn so far; returns the newly stable text ('' if none)."""
        words = hypothesis.split()
        agreed = 0
        for a, b in zip(self._previous, words, strict=False):
            if not _same(a, b):
                break
            agreed += 1
        self._previous = words
        if agreed <= len(self.published):
            return ""
        # Published words must stay a prefix of the agreement; if an earlier word changed, wait.
        if any(not _same(p, w) for p, w in zip(self.published, words, strict=False)):
            return ""
        new = words[len(self.published) : agreed]
        self.published.extend(new)
        return ("" if len(self.published) == len(new) else " ") + " ".join(new)

    def reset(self) -> None:
        self._previous = []
        self.published = []


_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
          "sixteen seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_WORD_VALUES = {w: i for i, w in enumerate(_UNITS)} | {w: 20 + 10 * i for i, w in enumerate(_TENS)}
_EDGES = re.compile(r"^(\W*)(.*?)(\W*)$")


def _number_words(n: int) -> str:
    if n < 20:
        return _UNITS[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens - 2] + ("" if ones == 0 else "-" + _UNITS[ones])


def _number(word: str) -> int | None:
    """0-99 written either way ('4', 'four', 'Twenty-five,'), else None."""
    core = _key(word.replace("-", " ")).strip()
    if core.isdigit():
        return int(core) if len(core) <= 2 else None
    parts = word.lower().strip(".,!?;:'\"").replace("-", " ").split()
    if len(parts) == 1 and parts[0] in _WORD_VALUES:
        return _WORD_VALUES[parts[0]]
    if len(parts) == 2 and parts[0] in _TENS and parts[1] in _UNITS[1:10]:
        return _WORD_VALUES[parts[0]] + _WORD_VALUES[parts[1]]
    return None


def _same(a: str, b: str) -> bool:
    """The same word, whatever its case and punctuation; a number written as digits or as words
    ('8', 'eight') is the same number: Whisper switches between the two from one decode to the next."""
    if _key(a) == _key(b):
        return True
    n = _number(a)
    return n is not None and n == _number(b)


same_word = _same  # public name: streaming/partial_window.py matches words the same way


def keep_shown(shown: list[str], final: str) -> str:
    """The final transcript, spelled as the words already shown where it says the same thing.

    Whisper writes a number as digits in one decode and as words in the next ('4' published from
    a partial, 'four queen of clubs' in the final). Where a shown word and the final's word are
    the same number, the final takes the shown spelling (with its own punctuation), and later
    digits follow the shown style when that style is words. Any real disagreement ends the
    alignment: from there the final stands as decoded."""
    words = final.split()
    out: list[str] = []
    as_words = False
    for i, word in enumerate(words):
        if i < len(shown):
            seen = shown[i]
            if _key(seen) == _key(word):
                out.append(word)
                continue
            if not _same(seen, word):
                return " ".join(out + words[i:])
            lead, _, trail = _EDGES.match(word).groups()  # type: ignore[union-attr]
            out.append(lead + _EDGES.match(seen).group(2) + trail)  # type: ignore[union-attr]
            as_words = not _key(seen).isdigit()
        elif as_words and _key(word).isdigit() and (n := _number(word)) is not None:
            lead, _, trail = _EDGES.match(word).groups()  # type: ignore[union-attr]
            out.append(lead + _number_words(n) + trail)
        else:
            out.append(word)
    return " ".join(out)
