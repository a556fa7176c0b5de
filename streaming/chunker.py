"""Split streamed text into speakable chunks: a short first clause, then whole sentences (sans-I/O).

Piper renders one sentence at a time and cannot start before the sentence is complete, so the
first audio of a reply comes only as fast as its first chunk is short. `TextChunker` therefore
cuts the first chunk at the first clause boundary (or after a few words), and later chunks at
sentence ends, with a hard cap in characters so a run-on sentence never holds audio back.

Text may arrive a few characters at a time (LLM tokens): a boundary is only decided once the
character after it has arrived, so "3.5", "Dr. Smith" and "1,000" are never split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Words that end in a period without ending the sentence (lower case, without the period).
ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof st sr jr vs etc e.g i.e a.m p.m no nos inc ltd co corp mt ft fig figs
    approx dept est gen gov lt col sgt capt rev hon jan feb mar apr jun jul aug sep sept oct nov
    dec mon tue wed thu fri sat sun u.s u.k u.n ph.d cf al vol pp ave blvd rd""".split()
)

_SENTENCE_END = ".!?…"
_CLAUSE_END = ",;:"
_DASHES = "—–"  # em and en dash: a clause boundary even without spaces around them
_CLOSERS = "\"')]}”’»"
_SPACE_RE = re.compile(r"\s+")
# What the synthesiser cannot take: C0/C1 control characters other than tab and line ends (a NUL
# ends espeak's phonemizer with "embedded null character"), and lone surrogates (not UTF-8).
_UNSPEAKABLE_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def speakable(text: str) -> str:
    """`text` with every character the synthesiser cannot take replaced by a space."""
    return _UNSPEAKABLE_RE.sub(" ", text)


@dataclass(frozen=True, slots=True)
class ChunkerConfig:
    """Where chunks are cut. Lengths are in characters unless named in words."""

    first_min_words: int = 2  # a first clause shorter than this waits for the next boundary
    first_max_words: int = 6  # with no boundary yet, the first chunk is cut after this many words
    later_min_chars: int = 40  # later chunks are cut at a clause only once they are this long...
    later_soft_chars: int = 120  # ...and only when no sentence end came by this length
    max_chars: int = 240  # hard cap for any chunk


class TextChunker:
    """Text in (any pieces), speakable chunks out. `push` returns the chunks now complete."""

    def __init__(self, config: ChunkerConfig | None = None) -> None:
        self.config = config or ChunkerConfig()
        self._buf = ""
        self._emitted = 0

    @property
    def pending(self) -> str:
        """Text received but not yet returned as a chunk."""
        return self._buf

    def push(self, text: str) -> list[str]:
        """Add text; return every chunk that is now complete (possibly none).

        Every text the synthesiser gets passes here, so it is cleaned here, once (`speakable`).
        """
        self._buf += speakable(text)
        out: list[str] = []
        while True:
            cut = self._next_cut(final=False)
            if cut is None:
                break
            self._take(cut, out)
        return out

    def flush(self) -> list[str]:
        """End of input: return whatever is left, still split at boundaries and the cap."""
        out: list[str] = []
        while self._buf.strip():
            cut = self._next_cut(final=True)
            self._take(cut if cut is not None else len(self._buf), out)
        self._buf = ""
        return out

    def reset(self) -> None:
        """Drop pending text and start over (a new reply: the next chunk is a short one again)."""
        self._buf = ""
        self._emitted = 0

    # --- internals -------------------------------------------------------------------------

    def _take(self, cut: int, out: list[str]) -> None:
        chunk = _SPACE_RE.sub(" ", self._buf[:cut]).strip()
        self._buf = self._buf[cut:]
        if any(c.isalnum() for c in chunk):
            out.append(chunk)
            self._emitted += 1
        elif chunk and out:
            out[-1] += chunk if chunk[0] in _CLOSERS else " " + chunk

    def _next_cut(self, final: bool) -> int | None:
        """Index to cut the buffer at, or None to wait for more text."""
        cfg, buf = self.config, self._buf
        first = self._emitted == 0
        best_clause: int | None = None
        word_cut = _word_cut(buf, cfg.first_max_words) if first else None
        for pos, kind in _boundaries(buf, final):
            words = len(buf[:pos].split())
            if first:
                if word_cut is not None and pos > word_cut:
                    return word_cut
                if words >= cfg.first_min_words or kind == "sentence" and words:
                    return pos
                continue
            if kind == "sentence" or pos > cfg.max_chars:
                return pos if pos <= cfg.max_chars else (best_clause or _space_cut(buf, cfg.max_chars))
            if pos >= cfg.later_min_chars:
                best_clause = pos
                if pos >= cfg.later_soft_chars:
                    return pos
        if word_cut is not None:
            return word_cut
        if len(buf) > cfg.max_chars:
            return best_clause or _space_cut(buf, cfg.max_chars)
        return None


def _boundaries(buf: str, final: bool) -> list[tuple[int, str]]:
    """(cut index, 'sentence' | 'clause') for each boundary whose following text has arrived."""
    found: list[tuple[int, str]] = []
    n = len(buf)
    i = 0
    while i < n:
        c = buf[i]
        if c == "\n":
            found.append((i + 1, "sentence"))
        elif c in _DASHES:
            j = i + 1
            while j < n and buf[j] in _DASHES:
                j += 1
            if j < n or final:
                found.append((j, "clause"))
            i = j
            continue
        elif c in _SENTENCE_END or c in _CLAUSE_END or (c == "-" and _spaced_hyphen(buf, i)):
            j = i + 1
            while j < n and (buf[j] in _SENTENCE_END or buf[j] in _CLOSERS):
                j += 1
            if j >= n:
                if final:
                    found.append((j, "sentence" if c in _SENTENCE_END else "clause"))
                break
            if not buf[j].isspace():
                i = j
                continue  # "3.5", "1,000", "10:30", "e.g.x": no boundary
            if c in _SENTENCE_END:
                verdict = _sentence_verdict(buf, i, j, final)
                if verdict is None:
                    break  # wait for the word after the period
                if verdict:
                    found.append((j, "sentence"))
            else:
                found.append((j, "clause"))
            i = j
            continue
        i += 1
    return found


def _spaced_hyphen(buf: str, i: int) -> bool:
    return 0 < i < len(buf) - 1 and buf[i - 1] == " " and buf[i + 1] == " "


def _sentence_verdict(buf: str, i: int, j: int, final: bool) -> bool | None:
    """Does the '.'/'!'/'?' at i (text resuming after whitespace at j) end a sentence?"""
    if buf[i] != ".":
        return True
    m = re.search(r"(\S+)$", buf[:i])
    word = m.group(1).lower().lstrip("\"'([") if m else ""
    if word in ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
        return False
    nxt = buf[j:].lstrip()
    if not nxt:
        return True if final else None
    # "approx. five" or "Inc. and": a lower-case word after a period rarely starts a sentence.
    return not nxt[0].islower()


def _word_cut(buf: str, max_words: int) -> int | None:
    """Index just after the `max_words`-th complete word (one followed by a space), if any."""
    count = 0
    for m in re.finditer(r"\S+(?=\s)", buf):
        count += 1
        if count == max_words:
            return m.end()
    return None


def _space_cut(buf: str, limit: int) -> int:
    """The last space at or before `limit`, else `limit` itself (one very long 'word')."""
    k = buf.rfind(" ", 0, limit + 1)
    return k if k > 0 else limit
