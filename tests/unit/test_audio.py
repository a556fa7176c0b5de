"""streaming.audio: G.711 codecs against the stdlib reference, formats, and anti-aliased resampling."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from kombain.streaming import audio as A
from kombain.streaming.audio import AudioFormat, AudioFormatError, Resampler

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    audioop = pytest.importorskip("audioop")

ALL_CODES = bytes(range(256))
ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)


def _i16(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.int64)


def _rms_db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2)))


def _sine(freq: float, rate: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# --- G.711 decode -------------------------------------------------------------------------------

def test_mulaw_decode_all_codes_matches_audioop() -> None:
    ours = A.mulaw_decode(ALL_CODES)
    ref = _i16(audioop.ulaw2lin(ALL_CODES, 2))
    assert ours.shape == (256,)
    np.testing.assert_array_equal(ours.astype(np.int64), ref)


def test_alaw_decode_all_codes_matches_audioop() -> None:
    ours = A.alaw_decode(ALL_CODES)
    ref = _i16(audioop.alaw2lin(ALL_CODES, 2))
    assert ours.shape == (256,)
    np.testing.assert_array_equal(ours.astype(np.int64), ref)


def test_g711_decode_known_values() -> None:
    # mu-law 0xFF / 0x7F are +0 / -0; 0x00 is the most negative, 0x80 the most positive value.
    assert A.mulaw_decode(bytes([0xFF, 0x7F, 0x00, 0x80])).tolist() == [0, 0, -32124, 32124]
    # A-law 0xD5 is the smallest positive step, 0x55 the smallest negative.
    assert A.alaw_decode(bytes([0xD5, 0x55])).tolist() == [8, -8]


# --- G.711 encode -> decode round trip ------------------------------------------------------------

@pytest.mark.parametrize(
    ("encode", "decode", "ref_encode", "ref_decode"),
    [
        (A.mulaw_encode, A.mulaw_decode, audioop.lin2ulaw, audioop.ulaw2lin),
        (A.alaw_encode, A.alaw_decode, audioop.lin2alaw, audioop.alaw2lin),
    ],
    ids=["mulaw", "alaw"],
)
def test_g711_round_trip_error_no_worse_than_audioop(encode, decode, ref_encode, ref_decode) -> None:
    coded = encode(ALL_INT16)
    assert isinstance(coded, bytes) and len(coded) == len(ALL_INT16)
    ours = decode(coded).astype(np.int64)
    ref = _i16(ref_decode(ref_encode(ALL_INT16.tobytes(), 2), 2))
    x = ALL_INT16.astype(np.int64)
    our_err = np.abs(ours - x)
    ref_err = np.abs(ref - x)
    assert our_err.max() <= ref_err.max()
    # Nearest-code quantisation is never worse than the reference at any single value either.
    assert (our_err <= ref_err).all()
    # Small values are quantised finely (G.711 is companded): at most a few LSB near zero.
    small = np.abs(x) < 32
    assert our_err[small].max() <= 8


def test_g711_codes_survive_decode_encode() -> None:
    # Every code's decoded value re-encodes to a code that decodes to the same value.
    for enc, dec in ((A.mulaw_encode, A.mulaw_decode), (A.alaw_encode, A.alaw_decode)):
        values = dec(ALL_CODES)
        np.testing.assert_array_equal(dec(enc(values)), values)


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
def test_float_encode_decode_g711(encoding: str) -> None:
    fmt = AudioFormat(encoding, 8000)
    x = _sine(440, 8000, 0.1, amp=0.8)
    coded = A.encode(x, fmt)
    assert len(coded) == len(x)  # one byte per sample
    y = A.decode(coded, fmt)
    assert y.dtype == np.float32 and y.shape == x.shape
    # 8-bit companded: error bounded by the largest quantisation step (~1024/32768 near full scale).
    assert np.abs(y - x).max() < 1100 / 32768
    assert np.abs(_rms_db(y) - _rms_db(x)) < 0.1


# --- AudioFormat ----------------------------------------------------------------------------------

def test_audio_format_defaults_and_bytes_per_sample() -> None:
    assert AudioFormat() == AudioFormat("pcm16", 24000)
    assert AudioFormat("pcm16", 16000).bytes_per_sample == 2
    assert AudioFormat("mulaw", 8000).bytes_per_sample == 1
    assert AudioFormat("alaw", 8000).bytes_per_sample == 1


@pytest.mark.parametrize("rate", A.SUPPORTED_RATES)
def test_audio_format_accepts_supported_pcm_rates(rate: int) -> None:
    assert AudioFormat("pcm16", rate).rate == rate


@pytest.mark.parametrize("encoding", ["opus", "pcm24", "PCM16", "", "ulaw"])
def test_audio_format_rejects_unknown_encoding(encoding: str) -> None:
    with pytest.raises(AudioFormatError, match="encoding"):
        AudioFormat(encoding, 8000)


@pytest.mark.parametrize("rate", [0, 11025, 44100, 96000, -16000])
def test_audio_format_rejects_unknown_rate(rate: int) -> None:
    with pytest.raises(AudioFormatError, match="sample rate"):
        AudioFormat("pcm16", rate)


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
@pytest.mark.parametrize("rate", [16000, 24000, 48000])
def test_audio_format_rejects_g711_not_8k(encoding: str, rate: int) -> None:
    with pytest.raises(AudioFormatError, match="8000"):
        AudioFormat(encoding, rate)


def test_audio_format_error_is_value_error() -> None:
    assert issubclass(AudioFormatError, ValueError)


# --- PCM16 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 3, 961])
def test_pcm16_to_float_odd_length_raises(n: int) -> None:
    with pytest.raises(AudioFormatError, match="odd"):
        A.pcm16_to_float(b"\x00" * n)


def test_pcm16_to_float_values() -> None:
    data = np.array([0, 16384, -32768, 32767], dtype="<i2").tobytes()
    np.testing.assert_allclose(A.pcm16_to_float(data), [0.0, 0.5, -1.0, 32767 / 32768])
    assert A.pcm16_to_float(b"").size == 0


def test_pcm16_encode_decode_round_trip() -> None:
    fmt = AudioFormat("pcm16", 16000)
    x = np.linspace(-0.99, 0.99, 2001).astype(np.float32)
    data = A.encode(x, fmt)
    assert isinstance(data, bytes) and len(data) == 2 * len(x)
    y = A.decode(data, fmt)
    assert y.dtype == np.float32
    assert np.abs(y - x).max() <= 2 / 32768


def test_pcm16_encode_clips_out_of_range() -> None:
    fmt = AudioFormat("pcm16", 16000)
    data = A.encode(np.array([2.0, -2.0, 0.0], dtype=np.float32), fmt)
    assert np.frombuffer(data, "<i2").tolist() == [32767, -32767, 0]


# --- Resampling -----------------------------------------------------------------------------------

def test_resampler_streaming_20ms_chunks_48k_to_16k() -> None:
    rate_in, rate_out = 48000, 16000
    sig = _sine(440, rate_in, 1.0)
    chunk = rate_in // 50  # 20 ms
    rs = Resampler(rate_in, rate_out)
    outs = []
    starts = list(range(0, len(sig), chunk))
    for i in starts:
        outs.append(rs.process(sig[i : i + chunk], last=(i == starts[-1])))
    out = np.concatenate(outs)
    assert out.dtype == np.float32
    assert abs(len(out) - len(sig) // 3) <= 4
    whole = A.resample(sig, rate_in, rate_out)
    assert abs(len(whole) - len(sig) // 3) <= 4
    n = min(len(out), len(whole))
    assert np.abs(out[:n] - whole[:n]).max() < 1e-3
    # And it is the same tone: 440 Hz at the same level, away from the edges.
    assert abs(_rms_db(out[500:-500]) - _rms_db(sig)) < 0.1


def test_resampler_keeps_state_between_chunks() -> None:
    # Output before `last=True` lags behind (filter delay), and the flush delivers the rest.
    rs = Resampler(48000, 16000)
    first = rs.process(np.zeros(960, dtype=np.float32))
    assert len(first) < 320
    rest = rs.process(np.zeros(960, dtype=np.float32), last=True)
    assert abs(len(first) + len(rest) - 640) <= 2


def test_resampler_same_rate_passthrough() -> None:
    x = np.arange(10, dtype=np.float64)
    rs = Resampler(16000, 16000)
    y = rs.process(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, x.astype(np.float32))
    z = A.resample(x, 8000, 8000)
    assert z.dtype == np.float32 and len(z) == 10


def test_resample_anti_aliasing_10k_at_48k_to_16k() -> None:
    sig = _sine(10000, 48000, 1.0)
    out = A.resample(sig, 48000, 16000)
    mid = out[1000:-1000]
    assert _rms_db(mid) - _rms_db(sig) < -40  # above the 8 kHz output Nyquist: filtered away


def test_resample_anti_aliasing_streaming() -> None:
    sig = _sine(10000, 48000, 1.0)
    rs = Resampler(48000, 16000)
    out = np.concatenate([rs.process(sig[i : i + 960], last=(i + 960 >= len(sig))) for i in range(0, len(sig), 960)])
    assert _rms_db(out[1000:-1000]) - _rms_db(sig) < -40


def test_resample_passband_1k_kept_within_1db() -> None:
    sig = _sine(1000, 48000, 1.0)
    out = A.resample(sig, 48000, 16000)
    assert abs(_rms_db(out[1000:-1000]) - _rms_db(sig)) < 1.0
    # Upsampling keeps it too.
    sig8 = _sine(1000, 8000, 1.0)
    up = A.resample(sig8, 8000, 16000)
    assert abs(len(up) - 16000) <= 4
    assert abs(_rms_db(up[500:-500]) - _rms_db(sig8)) < 1.0
