"""Audio from an uploaded file, for the transcription, translation and diarization endpoints: a 400
naming `file` (and kombain_transcriptions_total{result="bad_audio"}) when it is not audio."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np

from kombain.server.errors import ApiError
from kombain.streaming.decode_file import BadAudioFile, decode_audio_file, decode_audio_pieces


async def decode_upload(st: Any, data: bytes) -> np.ndarray:
    """The uploaded file as 16 kHz mono float32; a 400 naming `file` if it is not audio."""
    try:
        return await asyncio.to_thread(decode_audio_file, data)
    except BadAudioFile as exc:
        st.metrics.transcriptions_total.labels("bad_audio").inc()
        raise ApiError(400, str(exc), "invalid_audio", "file") from None


async def decode_pieces(st: Any, data: bytes) -> Iterator[np.ndarray]:
    """The uploaded file's audio, decoded as it is taken, in bounded pieces (streaming/long_file.py:
    a 4 h file costs what a minute does); a 400 naming `file` if it is not audio."""
    pieces = decode_audio_pieces(data)
    try:
        first = await asyncio.to_thread(next, pieces)
    except BadAudioFile as exc:
        st.metrics.transcriptions_total.labels("bad_audio").inc()
        raise ApiError(400, str(exc), "invalid_audio", "file") from None
    return _chain(first, pieces)


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest  # closing this closes `rest` (the decoder's container) too
