"""Smart Turn preprocessing: pure numpy, no ONNX model loaded."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from kombain.streaming import smart_turn
from kombain.streaming.smart_turn import SmartTurnModel, features

SR = 16000
WINDOW = 8 * SR


def signal(n: int, seed: int = 0) -> np.ndarray:
    """A 440 Hz tone, a rising sweep after 1 s, and a little noise: deterministic, speech-like range."""
    t = np.arange(n) / SR
    sweep = 0.2 * np.sin(2 * np.pi * (300 + 400 * t) * t) * (t > 1)
    noise = 0.01 * np.random.default_rng(seed).standard_normal(n)
    return (0.3 * np.sin(2 * np.pi * 440 * t) + sweep + noise).astype(np.float32)


def test_shape_and_dtype() -> None:
    f = features(signal(2 * SR))
    assert f.shape == (1, 80, 800) and f.dtype == np.float32
    assert SmartTurnModel.features(signal(SR)).shape == (1, 80, 800)  # usable without a model


def test_short_audio_is_padded_with_zeros_at_the_start() -> None:
    a = signal(SR)  # 1 s: lands in the last 100 frames
    f = features(a)[0]
    np.testing.assert_array_equal(f, features(np.concatenate([np.zeros(WINDOW - a.size, np.float32), a]))[0])
    # The padding is constant in time (the first ~7 s of frames are identical), the audio is at the end.
    assert np.all(f[:, :690] == f[:, :1])
    assert f[:, -100:].mean() > f[:, :690].mean() + 0.5
    # Not padded at the end: that would put the audio in the first frames instead.
    at_end = features(np.concatenate([a, np.zeros(WINDOW - a.size, np.float32)]))[0]
    assert not np.allclose(f, at_end)


def test_long_audio_keeps_the_last_8_seconds() -> None:
    a = signal(11 * SR, seed=1)
    np.testing.assert_array_equal(features(a), features(a[-WINDOW:]))
    other_start = np.concatenate([signal(5 * SR, seed=2), a[-WINDOW:]])
    np.testing.assert_array_equal(features(a), features(other_start))
    assert not np.array_equal(features(a), features(a[:WINDOW]))


def test_silence_and_empty_audio_give_finite_features() -> None:
    for audio in (np.zeros(SR, np.float32), np.zeros(0, np.float32), np.zeros(20 * SR, np.float32)):
        f = features(audio)
        assert f.shape == (1, 80, 800) and np.all(np.isfinite(f))
        assert np.all(f == -1.5)  # log10(1e-10) clamped, then (x + 4) / 4


def test_values_match_transformers_whisper_feature_extractor() -> None:
    """Reference numbers from transformers 5.24 `WhisperFeatureExtractor(chunk_length=8)(x,
    sampling_rate=16000, padding="max_length", max_length=128000, truncation=True,
    do_normalize=True)` on this noiseless signal, zero-padded at the start to 8 s."""
    t = np.arange(3 * SR) / SR
    a = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * (300 + 400 * t) * t) * (t > 1)).astype(np.float32)
    f = features(a)[0]
    reference = [
        (0, 0, -0.25765), (30, 0, -0.25765),
        (11, 530, 1.74229), (12, 530, 1.59761), (30, 530, -0.25765),
        (11, 650, 1.74229), (12, 650, 1.59762), (30, 650, 0.06295),
        (11, 799, 1.73977), (12, 799, 1.60118), (30, 799, 0.30962),
    ]
    for mel, frame, want in reference:
        assert f[mel, frame] == pytest.approx(want, abs=1e-4), (mel, frame)


def test_scale_does_not_matter_but_shape_does() -> None:
    a = signal(2 * SR)
    # The waveform is normalized first, so the input level changes nothing (up to the 1e-7 epsilon).
    np.testing.assert_allclose(features(a), features(a * 0.1), atol=1e-3)
    with pytest.raises(ValueError):
        features(np.zeros((2, SR), np.float32))


def test_missing_model_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert smart_turn.find_model() is None
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps pipecat-ai"):
        SmartTurnModel.load()
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps pipecat-ai"):
        SmartTurnModel.load(tmp_path / "nope.onnx")
