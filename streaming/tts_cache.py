"""A cache of synthesised speech: the same text in the same voice and format is rendered once.

IVR prompts, greetings and "One moment, please." come back call after call; their audio is kept
in this process (an LRU bounded in bytes) and, when a shared store is given (Redis, see
`kombain.server.tts_store`), for every node that shares it.

The key is everything that changes the audio: the voice (its id and a fingerprint of its model
and config files, so two nodes with different files of the same name never share audio), the
speaker (Piper's multi-speaker voices; the pool speaks speaker 0), the speaking rate (Piper's
length scale), the output sample rate, the synthesis settings the pool uses (noise scales from
the voice's config, no normalisation), and the text after cleaning (runs of white space made one
space, ends trimmed: "Hello,  there." and "Hello, there. " are one entry; case and punctuation
are kept, since they change the prosody).

What is worth keeping: whole chunks as the text chunker cuts them (clauses and sentences), up to
`max_chars` characters. Longer text (read-out documents, long LLM sentences) rarely repeats and
would push out the prompts. A render stopped early (barge-in) is never kept.
"""

from __future__ import annotations

import collections
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

KEY_VERSION = "v1"  # bump when the key's meaning or the stored format changes


class SharedStore(Protocol):
    """Audio shared by nodes (blocking calls, run on the cache's own thread, never on the event loop).

    `get` returns None on a miss and on a store error (the store counts its errors; the pool then
    renders); `set` never raises either: a cache that is down only makes speech slower.
    """

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, pcm: bytes) -> None: ...

    def close(self) -> None: ...


def clean_text(text: str) -> str:
    """The text as the key sees it: white space runs made one space, ends trimmed."""
    return " ".join(text.split())


def cache_key(voice_fingerprint: str, text: str, *, length_scale: float, rate: int, speaker: int = 0) -> str:
    """A stable key (the same on every node) for one rendering of `text`."""
    raw = "\x1f".join([KEY_VERSION, voice_fingerprint, str(speaker), f"{length_scale:.4f}", str(rate),
                       clean_text(text)])
    return "kombain:tts:" + KEY_VERSION + ":" + hashlib.sha256(raw.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class CacheConfig:
    max_bytes: int = 32 * 1024 * 1024  # per process (0 turns the memory tier off)
    max_chars: int = 200  # texts longer than this (after cleaning) are not cached
    max_entry_fraction: float = 0.125  # one entry may take at most this share of max_bytes


class SpeechCache:
    """LRU of PCM by key, bounded in bytes; thread-safe (renders finish on worker threads)."""

    def __init__(
        self,
        config: CacheConfig | None = None,
        *,
        store: SharedStore | None = None,
        on_lookup: Callable[[str], None] | None = None,
        on_size: Callable[[int], None] | None = None,
    ) -> None:
        self.config = config or CacheConfig()
        self.store = store
        self._on_lookup = on_lookup
        self._on_size = on_size
        self._entries: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def wanted(self, text: str) -> bool:
        """Whether `text` is one to cache (a clause or prompt, not a document)."""
        clean = clean_text(text)
        return 0 < len(clean) <= self.config.max_chars and (self.config.max_bytes > 0 or self.store is not None)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> bytes | None:
        """The audio kept in this process, or None (not counted: `count` says how a lookup ended)."""
        with self._lock:
            pcm = self._entries.get(key)
            if pcm is not None:
                self._entries.move_to_end(key)
            return pcm

    def put(self, key: str, pcm: bytes) -> None:
        """Keep `pcm` in this process, evicting the least recently used past the byte bound."""
        if not pcm or len(pcm) > self.config.max_bytes * self.config.max_entry_fraction:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._entries[key] = pcm
            self._bytes += len(pcm)
            while self._bytes > self.config.max_bytes and self._entries:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= len(dropped)
            size = self._bytes
        if self._on_size is not None:
            self._on_size(size)

    def count(self, outcome: str) -> None:
        """Record how a lookup ended: "memory" or "shared" (hits) or "miss"."""
        if self._on_lookup is not None:
            self._on_lookup(outcome)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
        if self._on_size is not None:
            self._on_size(0)
