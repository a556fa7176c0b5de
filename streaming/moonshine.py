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
_PARTS = ("encoder_model", "decoder_model_merged")


def max_tokens(samples: int) -> int:
    """The decoder's bound for `samples` of audio: 6.5 tokens a second and a little slack."""
    return int(math.ceil(samples / RATE * TOKENS_PER_SECOND)) + 4


def prepared(source: Path, cache: Path) -> Path:
    """A directory of `source`'s encoder and decoder as ONNX with the weights dequantized
    (streaming/ort_to_onnx.py), made once under `cache` (keyed by the source files' sizes and
    times) and reused; written to temporary names and renamed, so a crash leaves no half file."""
    from kombain.streaming.ort_to_onnx import fold_constants, ort_to_onnx

    key = hashlib.sha256()
    for f in _FILES:
        st = (source / f).stat()
        key.update(f"{source.resolve()}/{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    target = cache / f"moonshine-{key.hexdigest()[:16]}"
    if all((target / f"{p}.onnx").is_file() for p in _PARTS):
        return target
    import onnx

    target.mkdir(parents=True, exist_ok=True)
    for part in _PARTS:
        model = ort_to_onnx(source / f"{part}.ort")
        fold_constants(model)
        fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{part}.")
        os.close(fd)
        onnx.save(model, tmp)
        os.replace(tmp, target / f"{part}.onnx")
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

    def words(self, tokens: list[int]) -> list[str]:
        """The text of `tokens` split where a piece starts a word (for partials' stable prefix)."""
        return self.decode(tokens).split()


@dataclass(frozen=True, slots=True)
class Decoded:
    tokens: list[int]
    text: str
    avg_logprob: float
    hit_cap: bool  # stopped by the length bound, not by </s>: the end may be a loop's


class MoonshineModel:
    """The encoder and merged decoder sessions; `transcribe` runs them for a batch of clips of
    one length (the encoder takes no mask, so clips of other lengths are not padded together).
    Thread-safe: ONNX Runtime sessions may be run from several threads at once."""

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
        self.encoder = ort.InferenceSession(str(model_dir / "encoder_model.onnx"), opts, providers=providers)
        self.decoder = ort.InferenceSession(str(model_dir / "decoder_model_merged.onnx"), opts, providers=providers)
        self.tokenizer = MoonshineTokenizer.load(source / "tokenizer.bin")
        self._past_names = [i.name for i in self.decoder.get_inputs() if i.name.startswith("past_key_values.")]
        self._present_names = [o.name for o in self.decoder.get_outputs() if o.name.startswith("present.")]
        heads_dim = {i.name: i.shape for i in self.decoder.get_inputs()}
        shape = heads_dim[self._past_names[0]]
        self._heads, self._head_dim = int(shape[1]), int(shape[3])
        self.path = source

    def transcribe(self, batch: list[np.ndarray], caps: list[int] | None = None) -> list[Decoded]:
        """Greedy decodes of equally long 16 kHz float32 clips, each bounded by its `caps` entry."""
        n = len(batch)
        audio = np.stack([_fit(a) for a in batch]).astype(np.float32, copy=False)
        caps = caps or [max_tokens(len(a)) for a in batch]
        (hidden,) = self.encoder.run(None, {"input_values": audio})
        feeds: dict[str, Any] = {"encoder_hidden_states": hidden}
        empty = np.zeros((n, self._heads, 0, self._head_dim), dtype=np.float32)
        for name in self._past_names:
            feeds[name] = empty
        ids = np.full((n, 1), START, dtype=np.int64)
        tokens: list[list[int]] = [[] for _ in range(n)]
        logprob = np.zeros(n)
        done = np.zeros(n, dtype=bool)
        for step in range(max(caps)):
            feeds["input_ids"] = ids
            feeds["use_cache_branch"] = np.array([step > 0])
            logits, *present = self.decoder.run(None, feeds)
            last = logits[:, -1, :]
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
            for name, value in zip(self._present_names, present, strict=True):
                # The encoder's keys and values are made on the first step and passed on as they are.
                if step == 0 or ".decoder." in name:
                    feeds[name.replace("present.", "past_key_values.")] = value
            ids = np.where(done, EOS, nxt).astype(np.int64)[:, None]
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
