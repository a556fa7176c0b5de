"""Partial-transcript stabilisation: only words two consecutive decodes agree on are published."""

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
            if _key(a) != _key(b):
                break
            agreed += 1
        self._previous = words
        if agreed <= len(self.published):
            return ""
        # Published words must stay a prefix of the agreement; if an earlier word changed, wait.
        if any(_key(p) != _key(w) for p, w in zip(self.published, words, strict=False)):
            return ""
        new = words[len(self.published) : agreed]
        self.published.extend(new)
        return ("" if len(self.published) == len(new) else " ") + " ".join(new)

    def reset(self) -> None:
        self._previous = []
        self.published = []
