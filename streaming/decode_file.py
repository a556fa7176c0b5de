"""Decode an uploaded audio file (WAV, FLAC, MP3, OGG/Opus, ...) to 16 kHz mono float32 with PyAV."""

from __future__ import annotations

import io
from collections.abc import Iterator

import av
import numpy as np


class BadAudioFile(ValueError):
    """The bytes are not audio we can decode."""


# Input sample rates we resample from. A WAV header may claim 1 Hz: each byte then decodes to a
# second of audio, so 4 KiB of upload became an hour (800 MB of samples) before any check ran.
MIN_INPUT_RATE = 4000
MAX_INPUT_RATE = 768_000


PIECE_SECONDS = 60.0  # a long file is decoded (and transcribed) this much at a time (see below)
_CUT_SEARCH_S = 10.0  # a piece ends at the quietest 50 ms of its last this many seconds
# 60 s: faster-whisper's VAD runs its encoder over a whole piece at once (up to 320 s), and that
# is most of a piece's cost: a 3 h 50 min FLAC peaked 243 MB above the server's level with 60 s
# pieces, 414 MB with 300 s pieces, 3.8 GB decoded whole (docs/performance.md).


def decode_audio_file(data: bytes, rate: int = 16000, max_seconds: float = 4 * 3600) -> np.ndarray:
    """Decode `data` to mono float32 at `rate`; BadAudioFile if it is not audio, or is (or claims
    to be) longer than `max_seconds`. For long files prefer `decode_audio_pieces`."""
    pieces = list(decode_audio_pieces(data, rate, max_seconds, piece_seconds=float("inf")))
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def decode_audio_pieces(data: bytes, rate: int = 16000, max_seconds: float = 4 * 3600,
                        piece_seconds: float = PIECE_SECONDS) -> Iterator[np.ndarray]:
    """Decode `data` to mono float32 at `rate`, yielded in consecutive pieces of about
    `piece_seconds` (each cut at a quiet point near its end, so a word is not cut in half): a
    caller that transcribes and drops each piece holds one piece, whatever the file's duration
    (3 h 50 min decoded whole took 883 MB of samples, and more in copies of them). Raises
    BadAudioFile (from the first `next` when the file is not audio at all)."""
    if not data:
        raise BadAudioFile("the audio file is empty")
    too_long = BadAudioFile(f"audio is longer than {max_seconds:.0f} s")
    piece_samples = piece_seconds * rate
    yielded = False
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
            held = 0  # samples in chunks
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
                    chunks.append(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
                    held += len(chunks[-1])
                if held >= piece_samples:
                    audio = np.concatenate(chunks)
                    cut = _quiet_cut(audio, rate, len(audio) - int(_CUT_SEARCH_S * rate))
                    chunks, held = [audio[cut:].copy()], len(audio) - cut
                    yielded = True
                    yield audio[:cut]
                    del audio
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
                held += len(chunks[-1])
    except BadAudioFile:
        raise
    except (av.error.FFmpegError, ValueError, EOFError, IndexError) as exc:
        raise BadAudioFile(f"could not decode the audio file: {exc}") from None
    if held:
        yield np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    elif not yielded:
        raise BadAudioFile("the audio file contains no samples")


def _quiet_cut(audio: np.ndarray, rate: int, search_from: int) -> int:
    """Start of the quietest 50 ms frame of `audio` from `search_from` on (a pause, if any)."""
    frame = rate // 20
    start = max(frame, search_from)
    n = (len(audio) - start) // frame
    if n < 1:
        return len(audio)
    energy = np.square(audio[start : start + n * frame]).reshape(n, frame).mean(axis=1)
    return start + int(np.argmin(energy)) * frame
