"""A stand-in for `SileroVadModel`: a frame is voiced when it is loud, so tones are speech."""

from __future__ import annotations

import numpy as np

from kombain.streaming.vad import FRAME_SAMPLES

VOICED_P = 0.9
SILENT_P = 0.05


class FakeVadStream:
    """Per-call state like `VadStream`: 16 kHz samples in, one probability per 512-sample frame out."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.frames: list[float] = []  # every probability given, in order
        self.reset()

    def reset(self) -> None:
        """Forget any partial frame."""
        self._pending = np.zeros(0, dtype=np.float32)

    def process(self, samples: np.ndarray) -> list[float]:
        """Probabilities (0.9 when the frame's RMS exceeds the threshold, else 0.05) for each full frame."""
        buf = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        n = len(buf) // FRAME_SAMPLES
        probs = []
        for i in range(n):
            frame = buf[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]
            rms = float(np.sqrt(np.mean(np.square(frame, dtype=np.float64))))
            probs.append(VOICED_P if rms > self.threshold else SILENT_P)
        self._pending = buf[n * FRAME_SAMPLES :]
        self.frames += probs
        return probs


class FakeVadModel:
    """Shared "model"; `new_stream()` gives each call its own `FakeVadStream`."""

    def __init__(self, threshold: float = 0.02) -> None:
        self.threshold = threshold
        self.streams: list[FakeVadStream] = []

    def new_stream(self) -> FakeVadStream:
        """A fresh per-call stream."""
        stream = FakeVadStream(self.threshold)
        self.streams.append(stream)
        return stream
