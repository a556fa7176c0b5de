"""Decode an uploaded audio file (WAV, FLAC, MP3, OGG/Opus, ...) to 16 kHz mono float32 with PyAV."""

from __future__ import annotations

import io

import av
import numpy as np


class BadAudioFile(ValueError):
    """The bytes are not audio we can decode."""


# Input sample rates we resample from. A WAV header may claim 1 Hz: each byte then decodes to a
# second of audio, so 4 KiB of upload became an hour (800 MB of samples) before any check ran.
MIN_INPUT_RATE = 4000
MAX_INPUT_RATE = 768_000


def decode_audio_file(data: bytes, rate: int = 16000, max_seconds: float = 4 * 3600) -> np.ndarray:
    """Decode `data` to mono float32 at `rate`; BadAudioFile if it is not audio, or is (or claims
    to be) longer than `max_seconds`."""
    if not data:
        raise BadAudioFile("the audio file is empty")
    too_long = BadAudioFile(f"audio is longer than {max_seconds:.0f} s")
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            streams = container.streams.audio
            if not streams:
                raise BadAudioFile("the file has no audio stream")
            # A declared duration (FLAC STREAMINFO, WAV data size, ...) past the limit is refused
            # before decoding: a few MB of compressed silence would otherwise decode for seconds.
            if container.duration is not None and container.duration / av.time_base > max_seconds:
                raise too_long
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            chunks: list[np.ndarray] = []
            seconds = 0.0
            for frame in container.decode(streams[0]):
                if not MIN_INPUT_RATE <= frame.sample_rate <= MAX_INPUT_RATE:
                    raise BadAudioFile(f"sample rate {frame.sample_rate} Hz is outside "
                                       f"{MIN_INPUT_RATE}-{MAX_INPUT_RATE} Hz")
                # Counted on the input, before resampling allocates the frame's output.
                seconds += frame.samples / frame.sample_rate
                if seconds > max_seconds:
                    raise too_long
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
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
