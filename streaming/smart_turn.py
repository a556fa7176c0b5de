"""Smart Turn v3.2: an audio model that says whether the speaker has finished their turn.

The model (BSD-2, by Daily) is the 8.7 MB CPU ONNX file that ships inside the `pipecat-ai` wheel.
We only borrow that file: the package is installed with `pip install --no-deps pipecat-ai` and never
imported (its dependencies are absent, so importing it would fail). The preprocessing below
reproduces pipecat's `LocalSmartTurnAnalyzerV3._predict_endpoint` (pipecat-ai 1.14.0,
`pipecat/audio/turn/smart_turn/local_smart_turn_v3.py`), which the model was trained with:

1. keep the last 8 s of 16 kHz mono audio, or pad it with zeros at the START to 8 s;
2. normalize the waveform to zero mean and unit variance (`do_normalize=True`, eps 1e-7);
3. Whisper log-mel features as `transformers.WhisperFeatureExtractor(chunk_length=8)` computes
   them: periodic Hann window of 400, hop 160, reflect padding of 200 at both ends, power
   spectrum, 80 Slaney mel bins (0-8 kHz), drop the last frame, log10 (floor 1e-10), clamp to
   max - 8, then (x + 4) / 4. Result: float32 (1, 80, 800).

The ONNX graph ends in a Sigmoid, so its output (named "logits", shape (batch, 1)) is already the
probability that the turn is complete.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 8 * SAMPLE_RATE  # the model sees the last 8 s
N_FFT = 400
HOP = 160
N_MELS = 80
N_FRAMES = WINDOW_SAMPLES // HOP  # 800
MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
INSTALL_HINT = "pip install --no-deps pipecat-ai==1.14.0"


def find_model() -> Path | None:
    """The ONNX file bundled in the pipecat-ai wheel, or None if it is not installed.

    `find_spec` of a top-level package locates it without executing its `__init__`."""
    try:
        spec = importlib.util.find_spec("pipecat")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "audio" / "turn" / "smart_turn" / "data" / MODEL_FILE
        if path.is_file():
            return path
    return None


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    log_region = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) * 27.0 / np.log(6.4)
    return np.where(hz >= 1000.0, log_region, 3.0 * hz / 200.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return np.where(mel >= 15.0, 1000.0 * np.exp((mel - 15.0) * np.log(6.4) / 27.0), 200.0 * mel / 3.0)


def _mel_filters() -> np.ndarray:
    """Slaney-normalized triangular filters, (80, 201): Whisper's (librosa's) filterbank."""
    edges = _mel_to_hz(np.linspace(0.0, _hz_to_mel(np.array(SAMPLE_RATE / 2)), N_MELS + 2))
    bins = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    ramps = edges[:, None] - bins[None, :]
    widths = np.diff(edges)[:, None]
    tri = np.maximum(0.0, np.minimum(-ramps[:-2] / widths[:-1], ramps[2:] / widths[1:]))
    return tri * (2.0 / (edges[2:] - edges[:-2]))[:, None]


_MEL_FILTERS = _mel_filters()
_WINDOW = np.hanning(N_FFT + 1)[:-1]  # periodic Hann, as torch.hann_window


def features(audio16k: np.ndarray) -> np.ndarray:
    """The model input for 16 kHz mono audio (float in [-1, 1]): float32 (1, 80, 800). Pure numpy."""
    x = np.asarray(audio16k, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected 1-D mono audio, got shape {x.shape}")
    x = x[-WINDOW_SAMPLES:]
    x = np.pad(x, (WINDOW_SAMPLES - x.size, 0))  # zeros at the start
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x.astype(np.float64), N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:N_FRAMES]
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=-1)) ** 2  # (800, 201)
    log_mel = np.log10(np.maximum(_MEL_FILTERS @ power.T, 1e-10))
    log_mel = np.maximum(log_mel, log_mel.max() - 8.0)
    return ((log_mel + 4.0) / 4.0).astype(np.float32)[None]


class SmartTurnModel:
    """One ONNX session; `predict` is blocking and safe to call from several threads at once."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self._input = session.get_inputs()[0].name  # "input_features"

    @classmethod
    def load(cls, path: Path | None = None, *, threads: int = 1) -> SmartTurnModel:
        path = path or find_model()
        if path is None or not Path(path).is_file():
            where = f"at {path}" if path else "(the pipecat-ai package is not installed)"
            raise FileNotFoundError(
                f"Smart Turn model {MODEL_FILE} not found {where}; it ships in the pipecat-ai "
                f"wheel: {INSTALL_HINT}"
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        return cls(session)

    features = staticmethod(features)

    def predict(self, audio16k: np.ndarray) -> float:
        """Probability (0..1) that the turn is complete, given the audio of the turn so far."""
        (prob,) = self.session.run(None, {self._input: features(audio16k)})
        return float(prob[0, 0])
