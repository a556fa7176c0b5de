"""Transcribing a file of any length in bounded memory: decode a piece, transcribe it, drop it.

    pieces = decode_audio_pieces(data)                       # blocking generator (PyAV)
    result = await transcribe_pieces(runtime, pieces, opts)  # one piece in memory at a time

Each piece's segment (and word) times are moved onto the file's clock; the language detected in
the first piece is kept for the rest. Afterwards the C heap's freed pages go back to the system
(`trim_heap`): glibc keeps them otherwise, and a 4 h file left a gigabyte taken after its request.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import dataclasses
import logging
from collections.abc import Callable, Iterator

import numpy as np

from kombain.streaming.whisper_runtime import (
    DecodeOptions,
    DecodeResult,
    Segment,
    WhisperRuntime,
    shifted,
)

log = logging.getLogger("kombain.stt")

RATE = 16000

# (piece audio, its segments) -> segments: per-piece work that needs the samples (word times).
Refine = Callable[[np.ndarray, tuple[Segment, ...]], tuple[Segment, ...]]


async def transcribe_pieces(
    runtime: WhisperRuntime, pieces: Iterator[np.ndarray], options: DecodeOptions, *,
    on_segment: Callable[[Segment], None] | None = None, refine: Refine | None = None,
) -> DecodeResult:
    """Decode and transcribe `pieces` one at a time (decoding off the event loop); the result is
    the whole file's. `on_segment` gets each segment on the file's clock as it is decoded."""
    segments: list[Segment] = []
    offset = 0.0
    language: str | None = None
    took = 0.0
    try:
        while (piece := await asyncio.to_thread(next, pieces, None)) is not None:
            shift = offset
            hook = None if on_segment is None else (lambda seg, by=shift: on_segment(shifted(seg, by)))  # type: ignore[misc]
            result = await runtime.transcribe(piece, "offline", options, on_segment=hook)
            found = result.segments
            if refine is not None and found:
                found = await asyncio.to_thread(refine, piece, found)
            segments += [shifted(s, shift) for s in found]
            if language is None:
                language = result.language
                if runtime.multilingual and options.language is None:
                    options = dataclasses.replace(options, language=language)  # one language per file
            offset += len(piece) / RATE
            took += result.inference_seconds
            del piece, result, found
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            await asyncio.to_thread(close)  # the decoder's container, at once if we stopped early
        await asyncio.to_thread(trim_heap)
    text = " ".join(s.text for s in segments).strip()
    return DecodeResult(text, tuple(segments), language or options.language or "en", offset, took)


def _libc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        return libc.malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim this way
        return None


_MALLOC_TRIM = _libc_trim()


def trim_heap() -> None:
    """Give the C heap's free pages back to the system (glibc `malloc_trim`; a no-op elsewhere).
    Blocking for a few milliseconds on a large heap: call it in a thread."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
