"""What a caller sees of its words: when each appears, how many appear before the final, and
whether the final contradicts what was already shown (`python -m loadtest stt`, issue 11).

Reference word end times come from faster-whisper (tiny.en, `word_timestamps=True`) run offline
on each clip; a clip is one turn of the streamed corpus (`stt.load_corpus`). Per turn, the final
transcript's words are aligned to the reference words, and the words published by the
`...transcription.delta` events (stable words, never retracted) to the final's words (difflib,
on lower-case words without punctuation; digits count as words). Then, per final word:

  word_lag   the word's audio end sent (its audio position on the client's 1x clock, rounded up
             to the chunk that carried it) -> the word first on screen: the delta that published
             it, else the final
  early      whether it was shown by a delta before the final arrived

per turn whose final holds the clip's last word, `eos_final`: that word's audio end sent -> the
final received (end of speech -> final, the silence wait included),

and per turn with any published words, `rewrite`: the published words are not a prefix of the
final's words (the final contradicts text the caller has already seen).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import numpy as np

_TOKEN = re.compile(r"[a-z0-9']+")
DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"


def words_of(text: str) -> list[str]:
    return _TOKEN.findall(text.lower().replace("\u2019", "'"))


@dataclass
class TurnWords:
    """One turn as the client saw it."""

    shown: list[tuple[str, float]] = field(default_factory=list)  # published words, first-shown time
    final: list[str] = field(default_factory=list)
    final_t: float | None = None
    start_s: float | None = None  # where the server put the start of speech, on the stream's audio clock


@dataclass
class WordStats:
    lags: list[float] = field(default_factory=list)
    eos_final: list[float] = field(default_factory=list)  # last word's audio sent -> final received
    final_words: int = 0
    early_words: int = 0
    turns_with_partials: int = 0
    rewrites: int = 0
    examples: list[tuple[str, str]] = field(default_factory=list)  # (shown, final) of rewrites

    def add(self, other: WordStats) -> None:
        self.lags += other.lags
        self.eos_final += other.eos_final
        self.final_words += other.final_words
        self.early_words += other.early_words
        self.turns_with_partials += other.turns_with_partials
        self.rewrites += other.rewrites
        self.examples += other.examples

    def summary(self) -> dict[str, Any]:
        return {"final_words": self.final_words,
                "shown_early": round(self.early_words / self.final_words, 3) if self.final_words else None,
                "turns_with_partials": self.turns_with_partials, "rewrites": self.rewrites,
                "rewrite_rate": round(self.rewrites / self.turns_with_partials, 3) if self.turns_with_partials else None,
                "rewrite_examples": self.examples[:5]}


def turns_seen(events: Sequence[Any]) -> list[TurnWords]:
    """Turns in the order their items appeared, from `TimedEvent`s (`.t`, `.event`)."""
    turns: dict[str, TurnWords] = {}
    for e in events:
        ev = e.event
        item = ev.get("item_id")
        if ev.get("type") == "input_audio_buffer.speech_started" and item:
            turns.setdefault(item, TurnWords()).start_s = ev.get("audio_start_ms", 0) / 1000
        elif ev.get("type") == DELTA and item:
            turns.setdefault(item, TurnWords()).shown += [(w, e.t) for w in words_of(ev.get("delta", ""))]
        elif ev.get("type") == COMPLETED and item:
            turn = turns.setdefault(item, TurnWords())
            turn.final, turn.final_t = words_of(ev.get("transcript", "")), e.t
    return [t for t in turns.values() if t.final_t is not None]


def turn_stats(turn: TurnWords, reference: list[tuple[str, float]], offset_s: float, chunk_s: float,
               speed: float = 1.0) -> WordStats:
    """`reference`: (word, end in the clip, s) of this turn's clip; `offset_s`: the clip's start in
    the stream (so the word's audio left the client at (offset + end), rounded up to a chunk)."""
    out = WordStats(final_words=len(turn.final))
    shown_words = [w for w, _ in turn.shown]
    shown_at: dict[int, float] = {}  # final word index -> first-shown time
    for block in SequenceMatcher(None, shown_words, turn.final, autojunk=False).get_matching_blocks():
        for k in range(block.size):
            shown_at[block.b + k] = turn.shown[block.a + k][1]
    out.early_words = len(shown_at)
    if shown_words:
        out.turns_with_partials = 1
        if turn.final[:len(shown_words)] != shown_words:
            out.rewrites = 1
            out.examples.append((" ".join(shown_words), " ".join(turn.final)))
    ref_words = [w for w, _ in reference]
    assert turn.final_t is not None

    def sent_at(end_in_clip: float) -> float:
        return math.ceil((offset_s + end_in_clip) / chunk_s - 1e-9) * chunk_s / speed

    last_matched = False
    for block in SequenceMatcher(None, ref_words, turn.final, autojunk=False).get_matching_blocks():
        for k in range(block.size):
            seen = shown_at.get(block.b + k, turn.final_t)
            out.lags.append(max(0.0, seen - sent_at(reference[block.a + k][1])))
            last_matched = last_matched or block.a + k == len(reference) - 1
    if last_matched:  # the final covers the end of the clip's speech
        out.eos_final.append(max(0.0, turn.final_t - sent_at(reference[-1][1])))
    return out


def reference_words(audio_dir: Path) -> list[list[tuple[str, float]]]:
    """Per clip of transcripts.tsv: (word, end s) from faster-whisper tiny.en, offline."""
    from kombain.loadtest.word_times import clips_with_word_times

    return [[(w, end) for text, _, end in words for w in words_of(text)]
            for _, _, _, _, words in clips_with_word_times(audio_dir)]


def stream_word_stats(events: Sequence[Any], reference: list[list[tuple[str, float]]], offsets: list[float],
                      chunk_s: float, speed: float = 1.0) -> WordStats:
    """All turns of one stream: each is matched to the clip its speech started in."""
    out = WordStats()
    for turn in turns_seen(events):
        if turn.start_s is None:
            continue
        i = max(0, int(np.searchsorted(offsets, turn.start_s + 0.3, side="right")) - 1)
        out.add(turn_stats(turn, reference[i], offsets[i], chunk_s, speed))
    return out
