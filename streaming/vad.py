"""Silero voice activity detection: one ONNX model per process, state per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from kombain.streaming.models import silero_vad_path

FRAME_SAMPLES = 512  # 32 ms at 16 kHz: the window Silero v5+ is trained on
_CONTEXT = 64


class SileroVadModel:
    """The shared ONNX session. Thread-safe (onnxruntime's `run` is); holds no per-call state."""

    def __init__(self, path: Path) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self._sr = np.array(16000, dtype=np.int64)

    @classmethod
    def load(cls, path: Path | None = None) -> SileroVadModel:
        return cls(path or silero_vad_path())

    def new_stream(self) -> VadStream:
        return VadStream(self)

    def run(self, window: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        out, new_state = self.session.run(None, {"input": window, "state": state, "sr": self._sr})
        return float(out[0, 0]), new_state


class VadStream:
    """Per-session Silero state: 16 kHz float32 audio in, one speech probability per 32 ms frame out."""

    def __init__(self, model: SileroVadModel) -> None:
        self._model = model
        self.reset()

    @property
    def model(self) -> SileroVadModel:
        return self._model

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def process(self, samples: np.ndarray) -> list[float]:
        """Feed any number of samples; returns probabilities for each complete frame now available."""
        buf = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        n = len(buf) // FRAME_SAMPLES
        probs: list[float] = []
        for i in range(n):
            frame = buf[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]
            window = np.concatenate([self._context, frame])[None, :]
            p, self._state = self._model.run(window, self._state)
            self._context = frame[-_CONTEXT:]
            probs.append(p)
        self._pending = buf[n * FRAME_SAMPLES :]
        return probs
