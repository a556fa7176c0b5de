"""Decode an uploaded audio file (WAV, FLAC, MP3, OGG/Opus, ...) to 16 kHz mono float32 with PyAV."""

from __future__ import annotations

import io

import av
import numpy as np


class BadAudioFile(ValueError):
    """The bytes are not audio we can decode."""


def decode_audio_file(data: bytes, rate: int = 16000, max_seconds: float = 4 * 3600) -> np.ndarray:
    if not data:
        raise BadAudioFile("the audio file is empty")
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            streams = container.streams.audio
            if not streams:
                raise BadAudioFile("the file has no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            chunks: list[np.ndarray] = []
            total = 0
            for frame in container.decode(streams[0]):
                for out in resampler.resample(frame):
                    arr = out.to_ndarray().reshape(-1)
                    chunks.append(arr)
                    total += len(arr)
                if total > max_seconds * rate:
                    raise BadAudioFile(f"audio is longer than {max_seconds:.0f} s")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except BadAudioFile:
        raise
    except (av.error.FFmpegError, ValueError, EOFError, IndexError) as exc:
        raise BadAudioFile(f"could not decode the audio file: {exc}") from None
    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if len(audio) == 0:
        raise BadAudioFile("the audio file contains no samples")
    return audio
