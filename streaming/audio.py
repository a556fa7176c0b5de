"""PCM16 frames, G.711 codecs and anti-aliased resampling between the rates callers use."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr

SUPPORTED_RATES = (8000, 16000, 22050, 24000, 48000)
INTERNAL_RATE = 16000  # VAD and Whisper work at 16 kHz


class AudioFormatError(ValueError):
    """Audio that does not match what the session said it would send."""


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """An input or output encoding: 'pcm16' (little-endian), 'mulaw' or 'alaw', at a sample rate."""

    encoding: str = "pcm16"
    rate: int = 24000

    def __post_init__(self) -> None:
        if self.encoding not in ("pcm16", "mulaw", "alaw"):
            raise AudioFormatError(f"unsupported audio encoding {self.encoding!r}")
        if self.rate not in SUPPORTED_RATES:
            raise AudioFormatError(
                f"unsupported sample rate {self.rate}; use one of {', '.join(map(str, SUPPORTED_RATES))}"
            )
        if self.encoding != "pcm16" and self.rate != 8000:
            raise AudioFormatError("G.711 (mu-law / A-law) audio is 8000 Hz")

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding == "pcm16" else 1


def pcm16_to_float(data: bytes) -> np.ndarray:
    if len(data) % 2:
        raise AudioFormatError(f"PCM16 data has an odd number of bytes ({len(data)})")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


# --- G.711 (ITU-T), table-driven both ways ---------------------------------------------------

def _mulaw_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _alaw_decode_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    )
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


_MULAW_DEC = _mulaw_decode_table()
_ALAW_DEC = _alaw_decode_table()


def _encode_table(decode: np.ndarray) -> np.ndarray:
    # For each 16-bit value, the code whose decoded value is nearest: exact G.711 quantisation.
    order = np.argsort(decode, kind="stable")
    sorted_vals = decode[order].astype(np.int32)
    x = np.arange(-32768, 32768, dtype=np.int32)
    idx = np.clip(np.searchsorted(sorted_vals, x), 1, len(sorted_vals) - 1)
    left, right = sorted_vals[idx - 1], sorted_vals[idx]
    pick = np.where(x - left <= right - x, idx - 1, idx)
    return order[pick].astype(np.uint8)


_MULAW_ENC = _encode_table(_MULAW_DEC)
_ALAW_ENC = _encode_table(_ALAW_DEC)


def mulaw_decode(data: bytes) -> np.ndarray:
    return _MULAW_DEC[np.frombuffer(data, dtype=np.uint8)]


def alaw_decode(data: bytes) -> np.ndarray:
    return _ALAW_DEC[np.frombuffer(data, dtype=np.uint8)]


def mulaw_encode(pcm: np.ndarray) -> bytes:
    return _MULAW_ENC[pcm.astype(np.int32) + 32768].tobytes()


def alaw_encode(pcm: np.ndarray) -> bytes:
    return _ALAW_ENC[pcm.astype(np.int32) + 32768].tobytes()


def decode(data: bytes, fmt: AudioFormat) -> np.ndarray:
    """Bytes in `fmt` to float32 samples in [-1, 1) at fmt.rate."""
    if fmt.encoding == "pcm16":
        return pcm16_to_float(data)
    table = _MULAW_DEC if fmt.encoding == "mulaw" else _ALAW_DEC
    return table[np.frombuffer(data, dtype=np.uint8)].astype(np.float32) / 32768.0


def encode(samples: np.ndarray, fmt: AudioFormat) -> bytes:
    """float32 samples at fmt.rate to bytes in `fmt`."""
    if fmt.encoding == "pcm16":
        return float_to_pcm16(samples)
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int32)
    return mulaw_encode(pcm) if fmt.encoding == "mulaw" else alaw_encode(pcm)


class Resampler:
    """Streaming anti-aliased resampler (soxr): chunks in, chunks out, state kept between calls."""

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        self.in_rate, self.out_rate = in_rate, out_rate
        self._stream = (
            None if in_rate == out_rate else soxr.ResampleStream(in_rate, out_rate, 1, "float32", quality)
        )

    def process(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return samples.astype(np.float32, copy=False)
        return self._stream.resample_chunk(samples.astype(np.float32, copy=False), last=last)


def resample(samples: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Whole-buffer anti-aliased resampling."""
    if in_rate == out_rate:
        return samples.astype(np.float32, copy=False)
    return soxr.resample(samples.astype(np.float32, copy=False), in_rate, out_rate, "HQ")
