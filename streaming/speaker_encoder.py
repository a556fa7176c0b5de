"""Speaker embeddings: Resemblyzer's GE2E voice encoder (weights in its PyPI wheel) run in numpy.

The wheel's `pretrained.pt` is a legacy torch pickle: it is read once with torch (a lane
dependency, imported only here) and kept as `.npz` in the data directory; from then on neither
torch nor Resemblyzer's own imports (librosa, webrtcvad) are needed. The model is 40 mel bands
(25 ms windows every 10 ms, power, not log) -> 3-layer LSTM (256) -> linear + ReLU -> L2 norm,
over 1.6 s partials, as `resemblyzer.VoiceEncoder.embed_utterance` computes it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from kombain.streaming.models import ModelNotFound, package_dir

log = logging.getLogger("kombain.speakers")

RATE = 16000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s
PARTIAL_SAMPLES = PARTIAL_FRAMES * HOP
_TARGET_DBFS = -30.0


def _weights(data_dir: Path) -> dict[str, np.ndarray]:
    src = package_dir("resemblyzer") / "pretrained.pt"
    if not src.is_file():
        raise ModelNotFound(f"Resemblyzer's encoder weights are missing at {src}")
    cache = data_dir / "models" / "resemblyzer-encoder.npz"
    if cache.is_file() and cache.stat().st_mtime >= src.stat().st_mtime:
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    try:
        import torch
    except ImportError:
        raise ModelNotFound("reading Resemblyzer's weights the first time needs torch (pip install torch)") from None
    state = torch.load(src, map_location="cpu", weights_only=True)["model_state"]
    weights = {k.replace(".", "_"): v.numpy().astype(np.float32) for k, v in state.items()
               if k.startswith(("lstm.", "linear."))}
    cache.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".resemblyzer-", suffix=".npz")
    with os.fdopen(fd, "wb") as out:
        np.savez(out, **weights)
    os.replace(tmp, cache)
    log.info("converted Resemblyzer's encoder weights to %s", cache)
    return weights


def mel_filters(rate: int = RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """Slaney-style mel filter bank (librosa.filters.mel's default: htk=False, norm='slaney')."""
    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        lin = f / (200.0 / 3)
        log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
        return np.where(f >= 1000.0, log_part, lin)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, dtype=np.float64)
        lin = m * (200.0 / 3)
        log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
        return np.where(m >= 15.0, log_part, lin)

    fft_freqs = np.linspace(0, rate / 2, 1 + n_fft // 2)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(rate / 2)), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    weights = np.zeros((n_mels, len(fft_freqs)))
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


class SpeakerEncoder:
    """256-dimensional, L2-normed voice embeddings of 16 kHz float32 audio (thread-safe, blocking)."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self._w = weights
        self._mel = mel_filters()
        self._window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic hann

    @classmethod
    def load(cls, data_dir: Path) -> SpeakerEncoder:
        return cls(_weights(data_dir))

    def mel(self, audio: np.ndarray) -> np.ndarray:
        """(frames, 40) mel power spectrogram, frames centred every 10 ms (librosa's center=True)."""
        padded = np.pad(audio.astype(np.float32), N_FFT // 2, mode="reflect" if len(audio) > N_FFT // 2 else "constant")
        n = 1 + (len(padded) - N_FFT) // HOP
        idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
        out = np.empty((n, N_MELS), np.float32)
        for i in range(0, n, 6000):  # a minute of frames at a time: bounded temporary buffers
            spec = np.abs(np.fft.rfft(padded[idx[i : i + 6000]] * self._window, axis=1)) ** 2
            out[i : i + 6000] = spec.astype(np.float32) @ self._mel.T
        return out

    def embed_partials(self, mels: np.ndarray, batch: int = 256) -> np.ndarray:
        """(n, 160, 40) partial spectrograms -> (n, 256) embeddings, on one BLAS thread: the LSTM's
        small matrix products gain nothing from a second core (a busy one made them 10x slower),
        which stays free for the calls."""
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            out = [self._forward(mels[i : i + batch]) for i in range(0, len(mels), batch)]
        return np.concatenate(out) if out else np.zeros((0, 256), np.float32)

    def embed_windows(self, audio: np.ndarray, spans: list[tuple[int, int]], group: int = 128) -> np.ndarray:
        """One embedding per (start, end) sample span of `audio`: each span's 1.6 s partials
        (hop 0.8 s; a shorter span is widened to 1.6 s around its middle) averaged and normed.
        Spans are taken `group` at a time, so memory stays bounded whatever the file's length."""
        from threadpoolctl import threadpool_limits

        gain = volume_gain(audio)
        out = np.zeros((len(spans), 256), np.float32)
        with threadpool_limits(limits=1, user_api="blas"):
            for first in range(0, len(spans), group):
                partials: list[np.ndarray] = []
                owner: list[int] = []
                for k in range(first, min(first + group, len(spans))):
                    a, b = spans[k]
                    if b - a < PARTIAL_SAMPLES:
                        a = max(0, min((a + b) // 2 - PARTIAL_SAMPLES // 2, len(audio) - PARTIAL_SAMPLES))
                        b = a + PARTIAL_SAMPLES
                    piece = audio[a:b] * gain
                    if len(piece) < PARTIAL_SAMPLES:
                        piece = np.pad(piece, (0, PARTIAL_SAMPLES - len(piece)))
                    mel = self.mel(piece)
                    for s in range(0, max(1, mel.shape[0] - PARTIAL_FRAMES + 1), PARTIAL_FRAMES // 2):
                        m = mel[s : s + PARTIAL_FRAMES]
                        if m.shape[0] < PARTIAL_FRAMES:
                            m = np.pad(m, ((0, PARTIAL_FRAMES - m.shape[0]), (0, 0)))
                        partials.append(m)
                        owner.append(k)
                if partials:
                    np.add.at(out, np.array(owner), self._forward(np.stack(partials)))
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def embed_utterance(self, audio: np.ndarray) -> np.ndarray:
        """One embedding for a whole utterance (e.g. a known speaker's reference sample)."""
        return self.embed_windows(audio, [(0, len(audio))])[0]

    def _forward(self, x: np.ndarray) -> np.ndarray:
        w = self._w
        h = x.astype(np.float32)
        n, steps, _ = h.shape
        for layer in range(3):
            wih, whh = w[f"lstm_weight_ih_l{layer}"], w[f"lstm_weight_hh_l{layer}"]
            bias = w[f"lstm_bias_ih_l{layer}"] + w[f"lstm_bias_hh_l{layer}"]
            xs = h @ wih.T + bias  # (n, steps, 1024): the input part of every step at once
            hid = np.zeros((n, 256), np.float32)
            cell = np.zeros((n, 256), np.float32)
            whh_t = np.ascontiguousarray(whh.T)
            outs = np.empty((n, steps, 256), np.float32) if layer < 2 else None
            for t in range(steps):
                g = xs[:, t] + hid @ whh_t
                i, f, c, o = (g[:, :256], g[:, 256:512], g[:, 512:768], g[:, 768:])
                cell = _sigmoid(f) * cell + _sigmoid(i) * np.tanh(c)
                hid = _sigmoid(o) * np.tanh(cell)
                if outs is not None:
                    outs[:, t] = hid
            if outs is not None:
                h = outs
        raw = np.maximum(hid @ w["linear_weight"].T + w["linear_bias"], 0)
        return np.asarray(raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-9), dtype=np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (np.tanh(0.5 * x) + 1.0), dtype=np.float32)


def volume_gain(audio: np.ndarray) -> float:
    """The gain that raises (never lowers) `audio` to -30 dBFS RMS, as Resemblyzer's preprocessing
    does; summed a million samples at a time (no float64 copy of a long file)."""
    if not len(audio):
        return 1.0
    total = sum(float(np.dot(c.astype(np.float64), c.astype(np.float64)))
                for c in (audio[i : i + 1_000_000] for i in range(0, len(audio), 1_000_000)))
    rms = (total / len(audio)) ** 0.5
    if rms <= 1e-6:
        return 1.0
    return max(1.0, float(10 ** ((_TARGET_DBFS - 20 * np.log10(rms)) / 20)))
