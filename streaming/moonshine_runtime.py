"""Moonshine as a speech engine on the shared runtime's queue (streaming/stt_engine.py).

It keeps everything the Whisper runtime does for callers (priorities, a session's newer partial
replacing its queued one, partials never holding every worker, offline work yielding to live
work between pieces, the repetition-loop guard) and replaces only the decode: the audio as it
is (no 30 s window), greedy, at most ~6.5 tokens a second of audio. Long audio (files) is cut at
quiet points into pieces of at most PIECE_SECONDS. Moonshine gives no word times, no
no-speech probability and takes no prompt: docs/transcription.md says what that leaves out.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from kombain.streaming.decoding import DecodeOptions, DecodeResult, Segment, shifted
from kombain.streaming.models import moonshine_source
from kombain.streaming.moonshine import RATE, MoonshineModel, max_tokens
from kombain.streaming.whisper_runtime import WhisperRuntime, _Request, decode_workers

log = logging.getLogger("kombain.stt")

PIECE_SECONDS = 20.0  # one decode at most this long (live turns past it, and files, are cut)
_CUT_SEARCH_S = 5.0  # a piece ends at the quietest 50 ms of its last this many seconds
_QUIET_RMS = 1e-4  # audio this quiet has no speech: a low-confidence text on it is dropped


class MoonshineRuntime(WhisperRuntime):
    """Moonshine (ONNX Runtime, CPU) behind the speech engine interface."""

    word_times = False  # Moonshine has no alignment: segments carry no words (diarization refuses)

    @classmethod
    def load(  # type: ignore[override]
        cls, name: str, *, data_dir: Path, device: str = "auto", compute_type: str = "auto",
        threads: int = 0, workers: int = 0, batch: int = 0, **kwargs: Any,
    ) -> MoonshineRuntime:
        source = moonshine_source(name)
        workers, threads = decode_workers("cpu", workers, threads, os.cpu_count() or 1)
        # No batching unless asked for: the encoder takes no mask, so a batch pads its shorter
        # turns with silence, and a batch cannot be interrupted (docs/performance.md).
        batch = max(1, batch)
        log.info("loading Moonshine %s from %s on cpu, %d worker(s) of %d thread(s), batches up to %d",
                 name, source, workers, threads, batch)
        model = MoonshineModel(source, data_dir / "models", threads=threads)
        runtime = cls(model, name, multilingual=False, workers=workers, batch=batch, partial_batch=batch,
                      encode_batch=batch, **kwargs)
        runtime._warm_up()
        return runtime

    def _decode(self, req: _Request) -> DecodeResult:
        if req.kind != "offline" and len(req.audio) <= PIECE_SECONDS * RATE:
            return self._decode_batch([req.audio], req.options, req.kind != "partial")[0]
        t0 = time.perf_counter()
        kept: list[Segment] = []
        for start, piece in pieces(req.audio):
            if req.cancelled:
                break
            result = self._decode_batch([piece], req.options, req.kind != "partial")[0]
            for seg in result.segments:
                seg = shifted(seg, start / RATE)
                kept.append(seg)
                if req.on_segment is not None:
                    req.loop.call_soon_threadsafe(req.on_segment, seg)
            if req.kind == "offline":
                # Let live work overtake a long file between its pieces.
                while (urgent := self._next(below=req.priority)) is not None:
                    self._serve(urgent)
        text = " ".join(s.text for s in kept).strip()
        return DecodeResult(text, tuple(kept), "en", len(req.audio) / RATE, time.perf_counter() - t0)

    def _decode_batch(self, batch: list[np.ndarray], o: DecodeOptions, rescue: bool = False,
                      each: list[DecodeOptions] | None = None) -> list[DecodeResult]:
        """Greedy decodes of `batch` (padded with silence to its longest clip), each judged as the
        Whisper runtime judges its decodes (`_judge`: no text, a loop re-decoded in halves).
        Moonshine takes no prompt or prefix: `each` item's are not used."""
        from faster_whisper.transcribe import get_compression_ratio

        t0 = time.perf_counter()
        longest = max(len(a) for a in batch)
        padded = [a if len(a) == longest else np.pad(a, (0, longest - len(a))) for a in batch]
        decoded = self.model.transcribe(padded, [max_tokens(len(a)) for a in batch])
        took = time.perf_counter() - t0
        results = []
        for audio, d in zip(batch, decoded, strict=True):
            duration = len(audio) / RATE
            quiet = not len(audio) or float(np.sqrt(np.mean(np.square(audio)))) < _QUIET_RMS
            text = cut_capped_loop(d.text) if d.hit_cap else d.text
            ratio = get_compression_ratio(text) if text else 0.0
            redecode = (lambda piece: list(self._decode_batch([piece], o, True)[0].segments)) if rescue else None
            seg = Segment(0.0, duration, text, d.avg_logprob, 1.0 if quiet else 0.0, ratio)
            kept = tuple(self._judge(audio, seg, redecode))
            results.append(DecodeResult(" ".join(s.text for s in kept), kept, "en", duration, took))
        return results

    def _warm_up(self) -> None:
        self._decode_batch([np.zeros(RATE, dtype=np.float32)], DecodeOptions())


def pieces(audio: np.ndarray, piece_s: float = PIECE_SECONDS) -> list[tuple[int, np.ndarray]]:
    """(start sample, piece) of `audio` cut into pieces of at most `piece_s`, each ending at the
    quietest 50 ms of its last few seconds (a pause between words, where there is one)."""
    limit = int(piece_s * RATE)
    frame = RATE // 20
    out = []
    start = 0
    while len(audio) - start > limit:
        lo = start + limit - int(_CUT_SEARCH_S * RATE)
        n = (start + limit - lo) // frame
        energy = np.square(audio[lo : lo + n * frame]).reshape(n, frame).mean(axis=1)
        cut = lo + int(np.argmin(energy)) * frame
        out.append((start, audio[start:cut]))
        start = cut
    out.append((start, audio[start:]))
    return out


def cut_capped_loop(text: str, max_n: int = 8) -> str:
    """A decode that ran into its length bound (no end token) without a loop of the shared guard's
    four repeats: the first run of a phrase of 2+ words said again straight after itself, and all
    that follows, cut off (noise after "four queen of cloves" decoded it three times and a half).
    Only for capped decodes: a phrase said twice in speech that ended normally is kept."""
    words = text.split()
    norm = [w.lower().strip(",.!?") for w in words]
    for i in range(len(words)):
        for n in range(2, max_n + 1):
            if i + 2 * n <= len(words) and norm[i : i + n] == norm[i + n : i + 2 * n]:
                return " ".join(words[: i + n])
    return text
