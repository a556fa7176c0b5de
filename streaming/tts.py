"""Streaming speech synthesis: a pool of Piper voices shared by every session, and per-reply streams.

    pool = VoicePool.load(default_voice="en_US-joe-medium")   # blocking: call in a thread
    stream = pool.stream(voice=None, rate=24000, speed=1.0)   # on the event loop
    stream.push_text("Sure, let me check. ")                  # as LLM tokens arrive
    stream.end_input()
    async for chunk in stream:                                # PCM16 mono at `rate`
        send(chunk.pcm)
    await stream.aclose()                                     # or earlier, on barge-in

Synthesis runs on the pool's worker threads, one text chunk (a clause or sentence) per job, so
one long reply never blocks other sessions; a stream keeps at most `lookahead` chunks in flight.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kombain.streaming.audio import Resampler, float_to_pcm16
from kombain.streaming.chunker import ChunkerConfig, TextChunker
from kombain.streaming.synth_executor import NORMAL, URGENT, Overloaded, SynthExecutor
from kombain.streaming.tts_cache import SpeechCache, cache_key
from kombain.streaming.voices import (
    BUNDLED_VOICE,
    UnknownVoice,
    VoiceInfo,
    discover_voices,
    load_voice,
)

__all__ = ["Overloaded", "SpeechChunk", "SpeechStream", "UnknownVoice", "VoiceInfo", "VoicePool"]

MIN_SPEED, MAX_SPEED = 0.25, 4.0
MIN_RATE, MAX_RATE = 8000, 48000
MAX_PENDING_CHARS = 100_000  # text pushed but not yet synthesised, per stream


@dataclass(frozen=True, slots=True)
class SpeechChunk:
    """Audio for one piece of text: PCM16 little-endian mono at `rate`, and the text it speaks."""

    pcm: bytes
    rate: int
    text: str

    @property
    def duration(self) -> float:
        return len(self.pcm) / 2 / self.rate


class VoicePool:
    """Every Piper voice this process serves, loaded once, and the threads that run them."""

    def __init__(
        self,
        catalog: dict[str, VoiceInfo],
        default_voice: str,
        *,
        workers: int = 0,
        lookahead: int = 2,
        max_queue: int = 256,
        on_first_audio: Callable[[float], None] | None = None,
        on_queue_depth: Callable[[int], None] | None = None,
        cache: SpeechCache | None = None,
    ) -> None:
        if default_voice not in catalog:
            raise UnknownVoice(f"default voice {default_voice!r} is not in the catalog")
        self.catalog = dict(catalog)
        self.default_voice = default_voice
        self.lookahead = max(1, lookahead)
        self._on_first_audio = on_first_audio
        self._loaded: dict[str, Any] = {}
        self._load_lock = threading.Lock()
        self._executor = SynthExecutor(workers or os.cpu_count() or 1, max_queue, on_depth=on_queue_depth)
        # Clauses and prompts said again and again ("You said:", "One moment, please.") are rendered
        # once: kept in this process and, with a shared store, for every node (streaming/tts_cache.py).
        self.cache = cache if cache is not None else SpeechCache()
        self._fingerprints: dict[str, str] = {}
        # Shared-store lookups and writes run here, never on the event loop or a synthesis worker.
        self._store_thread = (concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="tts-cache")
                              if self.cache.store is not None else None)

    @classmethod
    def load(
        cls,
        default_voice: str = BUNDLED_VOICE,
        voices_dir: Path | str | None = None,
        **kwargs: Any,
    ) -> VoicePool:
        """Find the voices, load and warm up the default one (blocking: seconds; call in a thread)."""
        vdir = Path(voices_dir).expanduser() if voices_dir else None
        default_id, catalog = discover_voices(default_voice, vdir)
        pool = cls(catalog, default_id, **kwargs)
        try:
            pool._render(default_id, "Hello.", 1.0, 24000, threading.Event())
        except BaseException:
            pool.close()
            raise
        return pool

    def voices(self) -> list[VoiceInfo]:
        """Every voice a stream may use, default first."""
        rest = sorted(v for v in self.catalog if v != self.default_voice)
        return [self.catalog[v] for v in [self.default_voice, *rest]]

    def resolve(self, voice: str | None) -> str:
        """A voice id (None for the default); raises UnknownVoice."""
        if voice is None or voice == "":
            return self.default_voice
        if voice not in self.catalog:
            raise UnknownVoice(f"unknown voice {voice!r}; available: {', '.join(sorted(self.catalog))}")
        return voice

    def stream(
        self,
        voice: str | None = None,
        rate: int = 24000,
        speed: float = 1.0,
        *,
        chunker: ChunkerConfig | None = None,
    ) -> SpeechStream:
        """A new stream for one reply. Raises UnknownVoice or ValueError (rate, speed)."""
        voice_id = self.resolve(voice)
        if not MIN_RATE <= rate <= MAX_RATE:
            raise ValueError(f"sample rate must be {MIN_RATE} to {MAX_RATE} Hz, not {rate}")
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise ValueError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}, not {speed}")
        return SpeechStream(self, voice_id, rate, speed, TextChunker(chunker))

    async def synthesize(self, text: str, voice: str | None = None, rate: int = 24000, speed: float = 1.0) -> bytes:
        """All of `text` as one PCM16 buffer (for callers that do not stream)."""
        async with self.stream(voice, rate, speed) as stream:
            stream.push_text(text)
            stream.end_input()
            return b"".join([chunk.pcm async for chunk in stream])

    @property
    def pending(self) -> int:
        """Synthesis jobs queued or running."""
        return self._executor.pending

    def close(self) -> None:
        """Stop the workers (waiting jobs are cancelled, running ones finish)."""
        self._executor.shutdown(wait=True)
        if self._store_thread is not None:
            self._store_thread.shutdown(wait=True, cancel_futures=True)
            self.cache.store.close()  # type: ignore[union-attr]

    # --- run on worker threads ------------------------------------------------------------

    def _voice(self, voice_id: str) -> Any:
        voice = self._loaded.get(voice_id)
        if voice is None:
            with self._load_lock:  # voices other than the default load on first use, once
                voice = self._loaded.get(voice_id)
                if voice is None:
                    voice = self._loaded[voice_id] = load_voice(self.catalog[voice_id])
        return voice

    def _render(self, voice_id: str, text: str, speed: float, rate: int, cancel: threading.Event) -> bytes:
        """Synthesise one chunk of text to PCM16 at `rate`; stop between sentences once cancelled."""
        from piper.config import SynthesisConfig

        if cancel.is_set():
            return b""
        voice = self._voice(voice_id)
        # Not normalised: Piper scales each sentence to full range, which makes short clauses
        # louder than the sentences around them once replies are cut at clauses.
        config = SynthesisConfig(length_scale=voice.config.length_scale / speed, normalize_audio=False)
        parts = []
        for audio_chunk in voice.synthesize(text, config):
            parts.append(audio_chunk.audio_float_array)
            if cancel.is_set():
                break
        if not parts:
            return b""
        audio = np.concatenate(parts)
        return float_to_pcm16(Resampler(voice.config.sample_rate, rate).process(audio, last=True))

    def fingerprint(self, voice_id: str) -> str:
        """What identifies a voice's audio across nodes: its id, model size and config digest."""
        fp = self._fingerprints.get(voice_id)
        if fp is None:
            info = self.catalog[voice_id]
            try:
                size = info.path.stat().st_size
                config = hashlib.sha256(Path(f"{info.path}.json").read_bytes()).hexdigest()[:16]
            except OSError:
                size, config = 0, "unreadable"
            fp = self._fingerprints[voice_id] = f"{voice_id}:{size}:{config}"
        return fp

    def _submit(self, priority: int, voice_id: str, text: str, speed: float, rate: int,
                cancel: threading.Event) -> concurrent.futures.Future[bytes]:
        cache = self.cache
        if not cache.wanted(text):
            return self._executor.submit(priority, self._render, voice_id, text, speed, rate, cancel)
        key = cache_key(self.fingerprint(voice_id), text, length_scale=1.0 / speed, rate=rate)
        pcm = cache.get(key)
        if pcm is not None:  # no thread hop: the audio is there
            cache.count("memory")
            done: concurrent.futures.Future[bytes] = concurrent.futures.Future()
            done.set_result(pcm)
            return done
        if self._store_thread is None:
            cache.count("miss")
            fut = self._executor.submit(priority, self._render, voice_id, text, speed, rate, cancel)
            fut.add_done_callback(lambda f: self._keep(key, f, cancel))
            return fut
        # Ask the shared store first (on its own thread); render only on a miss. The future handed
        # back is ours, so cancelling it (barge-in) drops the reply whichever stage it is in.
        outer: concurrent.futures.Future[bytes] = concurrent.futures.Future()
        if self._executor.closed:
            raise RuntimeError("synthesis executor is shut down")
        self._store_thread.submit(self._from_store, outer, priority, key, voice_id, text, speed, rate, cancel)
        return outer

    def _from_store(self, outer: concurrent.futures.Future[bytes], priority: int, key: str, voice_id: str,
                    text: str, speed: float, rate: int, cancel: threading.Event) -> None:
        if outer.cancelled() or cancel.is_set():
            return
        pcm = self.cache.store.get(key)  # type: ignore[union-attr]
        if pcm is not None:
            self.cache.count("shared")
            self.cache.put(key, pcm)
            if not outer.cancelled():
                outer.set_result(pcm)
            return
        self.cache.count("miss")
        try:
            inner = self._executor.submit(priority, self._render, voice_id, text, speed, rate, cancel)
        except BaseException as exc:  # Overloaded, or shut down: the stream sees it as the chunk's error
            if not outer.cancelled():
                outer.set_exception(exc)
            return

        def done(f: concurrent.futures.Future[bytes]) -> None:
            self._keep(key, f, cancel, share=True)
            if outer.cancelled():
                return
            if f.cancelled():
                outer.cancel()
            elif f.exception() is not None:
                outer.set_exception(f.exception())  # type: ignore[arg-type]
            else:
                outer.set_result(f.result())

        inner.add_done_callback(done)
        outer.add_done_callback(lambda o: inner.cancel() if o.cancelled() else None)

    def _keep(self, key: str, fut: concurrent.futures.Future[bytes], cancel: threading.Event,
              share: bool = False) -> None:
        if fut.cancelled() or fut.exception() is not None or not fut.result() or cancel.is_set():
            return  # a render stopped early is not the whole clause
        pcm = fut.result()
        self.cache.put(key, pcm)
        if share and self._store_thread is not None:
            try:
                self._store_thread.submit(self.cache.store.set, key, pcm)  # type: ignore[union-attr]
            except RuntimeError:
                pass  # shutting down

    def _first_audio(self, seconds: float) -> None:
        if self._on_first_audio is not None:
            self._on_first_audio(seconds)


class SpeechStream:
    """Text in (pieces of any size), audio chunks out, in order; make one with `VoicePool.stream`.

    `push_text`, `flush` and `end_input` never block. Iterating yields `SpeechChunk`s until the
    input has ended and all of it is spoken. `aclose()` (also on leaving `async with`) stops
    promptly: queued chunks are dropped and a running one stops at its next sentence.
    """

    def __init__(self, pool: VoicePool, voice: str, rate: int, speed: float, chunker: TextChunker) -> None:
        self.pool, self.voice, self.rate, self.speed = pool, voice, rate, speed
        self._chunker = chunker
        self._pending: collections.deque[str] = collections.deque()
        self._text_at = 0.0
        self._inflight: collections.deque[tuple[str, concurrent.futures.Future[bytes]]] = collections.deque()
        self._submitted = 0
        self._cancel = threading.Event()
        self._wake = asyncio.Event()
        self._ended = False
        self._closed = False
        self.first_audio_latency: float | None = None  # text available -> first audio produced

    # --- input --------------------------------------------------------------------------

    def push_text(self, text: str) -> None:
        """Add text to speak; complete clauses start synthesising at once."""
        if self._ended or self._closed:
            raise RuntimeError("push_text after end_input or aclose")
        self._enqueue(self._chunker.push(text))
        if len(self._chunker.pending) > MAX_PENDING_CHARS:
            raise ValueError("too much text pending in one speech stream")

    def flush(self) -> None:
        """Speak what has been pushed so far even if it ends mid-sentence."""
        if not self._closed:
            self._enqueue(self._chunker.flush())

    def end_input(self) -> None:
        """No more text: the stream ends once everything pushed is spoken."""
        if self._ended or self._closed:
            return
        self._enqueue(self._chunker.flush())
        self._ended = True
        self._wake.set()

    # --- output -------------------------------------------------------------------------

    def __aiter__(self) -> SpeechStream:
        return self

    async def __anext__(self) -> SpeechChunk:
        while True:
            if self._closed:
                raise StopAsyncIteration
            self._top_up(raise_overload=not self._inflight)
            if self._inflight:
                text, fut = self._inflight[0]
                try:
                    pcm = await asyncio.wrap_future(fut)
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if self._closed and fut.cancelled() and not (task and task.cancelling()):
                        raise StopAsyncIteration from None
                    raise
                if self._closed:
                    raise StopAsyncIteration
                self._inflight.popleft()
                self._top_up()
                if pcm:
                    return SpeechChunk(pcm, self.rate, text)
                continue
            if self._ended and not self._pending:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()

    async def aclose(self) -> None:
        """Stop now: drop unspoken text and queued jobs, let a running one stop early."""
        self.cancel()

    def cancel(self) -> None:
        """Synchronous `aclose` (for callbacks that cannot await)."""
        if self._closed:
            return
        self._closed = True
        self._cancel.set()
        self._pending.clear()
        for _, fut in self._inflight:
            fut.cancel()
        self._wake.set()

    async def __aenter__(self) -> SpeechStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        return self._closed

    # --- internals ----------------------------------------------------------------------

    def _enqueue(self, chunks: list[str]) -> None:
        if not chunks:
            return
        if self._submitted == 0 and not self._pending:
            self._text_at = time.monotonic()  # the first text there is to speak
        self._pending.extend(chunks)
        self._top_up()
        self._wake.set()

    def _top_up(self, raise_overload: bool = False) -> None:
        """Submit pending chunks while fewer than `lookahead` are in flight."""
        while self._pending and len(self._inflight) < self.pool.lookahead and not self._closed:
            text = self._pending[0]
            first = self._submitted == 0
            try:
                fut = self.pool._submit(
                    URGENT if first else NORMAL, self.voice, text, self.speed, self.rate, self._cancel
                )
            except Overloaded:
                if raise_overload:
                    raise
                return  # retried when the consumer next asks for audio
            self._pending.popleft()
            self._submitted += 1
            if first:
                fut.add_done_callback(self._on_first_done)
            self._inflight.append((text, fut))

    def _on_first_done(self, fut: concurrent.futures.Future[bytes]) -> None:
        # Runs on the worker thread that produced the audio: the time it was produced.
        if fut.cancelled() or fut.exception() is not None or not fut.result():
            return
        self.first_audio_latency = time.monotonic() - self._text_at
        self.pool._first_audio(self.first_audio_latency)
