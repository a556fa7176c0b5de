"""Incremental audio encoders for streamed speech: PCM16 mono in, container bytes out as they are ready.

No I/O: `encode(pcm)` returns whatever bytes the encoder has finished so far (maybe none),
`finish()` the rest. Compressed formats use PyAV (FFmpeg) with a non-seekable sink, so muxers
write headers up front and never go back to patch them.
"""

from __future__ import annotations

import struct
from typing import Any, Protocol

import numpy as np

# response_format -> MIME type, as OpenAI's /v1/audio/speech names them.
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
FORMATS = tuple(CONTENT_TYPES)


class AudioEncoder(Protocol):
    """PCM16 mono in, encoded bytes out, in order."""

    content_type: str

    def encode(self, pcm: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


def make_encoder(fmt: str, rate: int) -> AudioEncoder:
    """An encoder for `fmt` (one of FORMATS) taking PCM16 mono at `rate`."""
    if fmt == "pcm":
        return PcmEncoder()
    if fmt == "wav":
        return WavEncoder(rate)
    if fmt == "mp3":
        return AvEncoder("mp3", "libmp3lame", rate, CONTENT_TYPES["mp3"], bit_rate=64000)
    if fmt == "opus":
        # Ogg pages are flushed every 100 ms instead of every second, so audio leaves promptly.
        return AvEncoder(
            "ogg", "libopus", rate, CONTENT_TYPES["opus"], bit_rate=32000,
            container_options={"page_duration": "100000"},
        )
    if fmt == "aac":
        return AvEncoder("adts", "aac", rate, CONTENT_TYPES["aac"], bit_rate=64000)
    if fmt == "flac":
        return AvEncoder("flac", "flac", rate, CONTENT_TYPES["flac"])
    raise ValueError(f"unsupported audio format {fmt!r}; use one of {', '.join(FORMATS)}")


class PcmEncoder:
    """Raw PCM16 little-endian: passed through."""

    content_type = CONTENT_TYPES["pcm"]

    def encode(self, pcm: bytes) -> bytes:
        return pcm

    def finish(self) -> bytes:
        return b""


class WavEncoder:
    """WAV with a streaming header: the sizes say 'unknown' (0xFFFFFFFF), as live WAV streams do."""

    content_type = CONTENT_TYPES["wav"]

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._header_sent = False

    def header(self) -> bytes:
        unknown = 0xFFFFFFFF
        fmt = struct.pack("<HHIIHH", 1, 1, self.rate, self.rate * 2, 2, 16)
        return (
            b"RIFF" + struct.pack("<I", unknown) + b"WAVE"
            + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", unknown)
        )

    def encode(self, pcm: bytes) -> bytes:
        if self._header_sent:
            return pcm
        self._header_sent = True
        return self.header() + pcm

    def finish(self) -> bytes:
        return b"" if self._header_sent else self.encode(b"")


class _Sink:
    """A write-only, non-seekable file for PyAV: collects what the muxer writes."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def write(self, data: bytes) -> int:
        self._buf += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self._buf)
        self._buf.clear()
        return out


class AvEncoder:
    """An FFmpeg encoder and muxer fed PCM16 chunk by chunk."""

    def __init__(
        self,
        container: str,
        codec: str,
        rate: int,
        content_type: str,
        bit_rate: int | None = None,
        container_options: dict[str, str] | None = None,
    ) -> None:
        import av

        self.content_type = content_type
        self._rate = rate
        self._sink = _Sink()
        options = {"flush_packets": "1", **(container_options or {})}
        self._out: Any = av.open(self._sink, mode="w", format=container, container_options=options)
        stream: Any = self._out.add_stream(codec, rate=rate, layout="mono")
        self._stream = stream
        if bit_rate:
            stream.bit_rate = bit_rate
        ctx: Any = stream.codec_context
        ctx.open()  # fixes the frame size and sample format the encoder wants
        self._resampler = av.AudioResampler(
            format=ctx.format.name, layout="mono", rate=rate, frame_size=ctx.frame_size or None
        )
        self._pts = 0
        self._finished = False

    def encode(self, pcm: bytes) -> bytes:
        if pcm:
            import av

            samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate = self._rate
            frame.pts = self._pts
            self._pts += samples.shape[1]
            self._mux(self._resampler.resample(frame))
        return self._sink.take()

    def finish(self) -> bytes:
        if not self._finished:
            self._finished = True
            self._mux(self._resampler.resample(None))
            for packet in self._stream.encode(None):
                self._out.mux(packet)
            self._out.close()
        return self._sink.take()

    def close(self) -> None:
        """Release FFmpeg state without producing more output (a cancelled stream)."""
        if not self._finished:
            self._finished = True
            self._out.close()

    def _mux(self, frames: list[Any]) -> None:
        for frame in frames:
            for packet in self._stream.encode(frame):
                self._out.mux(packet)
