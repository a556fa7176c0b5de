"""Moonshine base (English) through ONNX Runtime: the `.ort` encoder and merged decoder (with its
KV cache) and the tokenizer that the `moonshine-cpp` wheel ships (MIT), run from Python.

Moonshine's encoder takes the raw 16 kHz samples and its compute grows with their length (no
30 s window to pad to), which suits short turns. Decoding is greedy, bounded by the audio's
length (Moonshine's reference: about 6.5 tokens a second) so a decoder loop cannot run on.
The model gives no word times and no no-speech probability: see docs/transcription.md.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RATE = 16000
START, EOS = 1, 2  # <s>, </s>
TOKENS_PER_SECOND = 6.5
MIN_SAMPLES = RATE // 10  # the encoder's convolutions need at least ~0.1 s (shorter: padded)
MAX_SECONDS = 30.0  # one decode at most this long; longer audio is cut at quiet points
_FILES = ("encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin")
_PARTS = ("encoder", "decoder_first", "decoder_step")
_VERSION = "int8-split-1"  # what `prepared` makes; a change here makes it again


def max_tokens(samples: int) -> int:
    """The decoder's bound for `samples` of audio: 6.5 tokens a second and a little slack."""
    return int(math.ceil(samples / RATE * TOKENS_PER_SECOND)) + 4


def prepared(source: Path, cache: Path) -> Path:
    """A directory of `source`'s model as three ONNX files, made once under `cache` (keyed by the
    source files' sizes and times and by _VERSION) and reused: the encoder, the decoder's first
    step (no cache yet) and its cached step, each with its weights dequantized (the `.ort` files
    rebuild them on every run: streaming/ort_to_onnx.py) and its MatMuls quantized again by ONNX
    Runtime's dynamic int8 quantizer (int8 kernels: 2.3x less CPU a decode, the same words on the
    project's clips; docs/performance.md). Written to temporary names and renamed into place, so a
    crash leaves no half file."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from kombain.streaming.ort_to_onnx import fold_constants, ort_to_onnx, split_branches

    key = hashlib.sha256(_VERSION.encode())
    for f in _FILES:
        st = (source / f).stat()
        key.update(f"{source.resolve()}/{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    target = cache / f"moonshine-{key.hexdigest()[:16]}"
    if all((target / f"{p}.onnx").is_file() for p in _PARTS):
        return target
    target.mkdir(parents=True, exist_ok=True)
    models: dict[str, Any] = {}
    models["encoder"] = ort_to_onnx(source / "encoder_model.ort")
    fold_constants(models["encoder"])
    decoder = ort_to_onnx(source / "decoder_model_merged.ort")
    fold_constants(decoder)
    branches = split_branches(decoder, "use_cache_branch")
    del decoder
    models["decoder_step"], models["decoder_first"] = branches.pop("then"), branches.pop("else")
    for name in _PARTS:
        with tempfile.TemporaryDirectory(dir=target) as tmp:
            plain, quantized = Path(tmp) / "plain.onnx", Path(tmp) / "int8.onnx"
            onnx.save(models.pop(name), plain)
            quantize_dynamic(plain, quantized, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
            os.replace(quantized, target / f"{name}.onnx")
    return target


class MoonshineTokenizer:
    """tokenizer.bin: each token's bytes after a length (one byte, or two when the first has its
    high bit set); SentencePiece pieces ('▁' for a space) with byte fallback (ids 3-258)."""

    def __init__(self, data: bytes) -> None:
        pieces: list[bytes] = []
        i = 0
        while i < len(data):
            n = data[i]
            i += 1
            if n >= 0x80:
                n = (n & 0x7F) | (data[i] << 7)
                i += 1
            if i + n > len(data):
                raise ValueError("tokenizer.bin is truncated")
            pieces.append(data[i : i + n])
            i += n
        if len(pieces) < 259:
            raise ValueError(f"tokenizer.bin holds {len(pieces)} tokens; a Moonshine vocabulary has 32000")
        self.pieces = pieces

    @classmethod
    def load(cls, path: Path) -> MoonshineTokenizer:
        return cls(path.read_bytes())

    def token_bytes(self, token: int) -> bytes:
        if token <= EOS or token >= len(self.pieces):
            return b""  # <unk>, <s>, </s> and the logits' padding past the vocabulary
        return self.pieces[token]

    def decode(self, tokens: list[int]) -> str:
        raw = b"".join(self.token_bytes(t) for t in tokens)
        return raw.decode("utf-8", errors="replace").replace("\u2581", " ").strip()


@dataclass(frozen=True, slots=True)
class Decoded:
    tokens: list[int]
    text: str
    avg_logprob: float
    hit_cap: bool  # stopped by the length bound, not by </s>: the end may be a loop's


class MoonshineModel:
    """The encoder and the decoder's first and cached steps (`prepared`); `transcribe` runs them
    for a batch of clips of one length (the encoder takes no mask: a caller pads shorter clips
    with silence). Thread-safe: ONNX Runtime sessions may be run from several threads at once."""

    def __init__(self, source: Path, cache: Path, *, threads: int = 1) -> None:
        import onnxruntime as ort

        model_dir = prepared(source, cache)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # The decoder runs once per token; spinning threads between those short runs only burns
        # the cores other workers (and callers) need.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(model_dir / "encoder.onnx"), opts, providers=providers)
        self.first = ort.InferenceSession(str(model_dir / "decoder_first.onnx"), opts, providers=providers)
        self.step = ort.InferenceSession(str(model_dir / "decoder_step.onnx"), opts, providers=providers)
        self.tokenizer = MoonshineTokenizer.load(source / "tokenizer.bin")
        self._first_out = [o.name for o in self.first.get_outputs()]
        self._step_out = [o.name for o in self.step.get_outputs()]
        self._past = [i.name for i in self.step.get_inputs() if i.name.startswith("past_key_values.")]
        self.path = source

    def transcribe(self, batch: list[np.ndarray], caps: list[int] | None = None) -> list[Decoded]:
        """Greedy decodes of equally long 16 kHz float32 clips, each bounded by its `caps` entry."""
        n = len(batch)
        audio = np.stack([_fit(a) for a in batch]).astype(np.float32, copy=False)
        caps = caps or [max_tokens(len(a)) for a in batch]
        (hidden,) = self.encoder.run(None, {"input_values": audio})
        ids = np.full((n, 1), START, dtype=np.int64)
        found = dict(zip(self._first_out, self.first.run(None, {"input_ids": ids, "encoder_hidden_states": hidden}),
                         strict=True))
        # The cross-attention keys and values are made on the first step and passed on as they are.
        feeds: dict[str, Any] = {name: found[name.replace("past_key_values.", "present.")] for name in self._past}
        tokens: list[list[int]] = [[] for _ in range(n)]
        logprob = np.zeros(n)
        done = np.zeros(n, dtype=bool)
        while True:
            last = found["logits"][:, -1, :]
            nxt = last.argmax(axis=-1)
            # log-softmax of the chosen token only: a confidence for the hallucination guard.
            top = last[np.arange(n), nxt]
            lse = top + np.log(np.exp(last - top[:, None]).sum(axis=-1))
            for i in range(n):
                if done[i]:
                    continue
                if nxt[i] == EOS or len(tokens[i]) >= caps[i]:
                    done[i] = True
                    continue
                tokens[i].append(int(nxt[i]))
                logprob[i] += float(top[i] - lse[i])
            if done.all():
                break
            feeds["input_ids"] = np.where(done, EOS, nxt).astype(np.int64)[:, None]
            found = dict(zip(self._step_out, self.step.run(None, feeds), strict=True))
            for name in self._past:
                if ".decoder." in name:
                    feeds[name] = found[name.replace("past_key_values.", "present.")]
        out = []
        for i in range(n):
            text = self.tokenizer.decode(tokens[i])
            avg = logprob[i] / max(1, len(tokens[i]))
            out.append(Decoded(tokens[i], text, float(avg), len(tokens[i]) >= caps[i]))
        return out


def _fit(audio: np.ndarray) -> np.ndarray:
    """At least MIN_SAMPLES (zeros after a clip too short for the encoder's convolutions)."""
    if len(audio) >= MIN_SAMPLES:
        return audio
    return np.pad(audio, (0, MIN_SAMPLES - len(audio)))
