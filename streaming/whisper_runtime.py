"""One faster-whisper model per process, serving every session through a bounded priority queue.

Worker threads (one per core on a CPU) take requests most urgent first: finals before partials; a
session's queued partial is replaced by its newer one; offline (file) work yields between segments
so live finals are not stuck behind a long upload. Live decodes that wait together are decoded as
one batch (same window and options): the decoder steps of a batch cost little more than one
decode's, so a burst of turns ending at once finishes sooner (docs/performance.md). A batch
cannot be interrupted, so partials never hold every worker: a final always finds one free.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kombain.streaming.decoding import (
    DecodeOptions,
    DecodeResult,
    Kind,
    RuntimeBusy,
    Segment,
    Word,
    batchable,
    shifted,
)
from kombain.streaming.hallucination import (
    cut_repetition_loops,
    looks_like_loop,
    quiet_split,
    speech_like,
)
from kombain.streaming.models import resolve_stt_model

# The decode's types live in decoding.py (shared by every engine); they are re-exported here.
__all__ = ["DecodeOptions", "DecodeResult", "Kind", "RuntimeBusy", "Segment", "WhisperRuntime", "Word",
           "batch_limits", "decode_workers", "pick_device", "shifted"]
log = logging.getLogger("kombain.stt")

_PRIORITY: dict[str, int] = {"final": 0, "partial": 1, "offline": 2}
_MAX_WINDOW = 30.0
_RATE = 16000
# A window whose transcript looks like a repetition loop is decoded again in halves, down to
# pieces this long (30 s -> 15 -> 7.5: at most six more decodes of a 30 s window).
_MIN_PIECE = 4 * _RATE


@dataclass(order=True)
class _Request:
    priority: int
    seq: int
    kind: str = field(compare=False)
    audio: np.ndarray = field(compare=False)
    options: DecodeOptions = field(compare=False)
    key: Any = field(compare=False)
    future: asyncio.Future[DecodeResult] = field(compare=False)
    loop: asyncio.AbstractEventLoop = field(compare=False)
    on_segment: Callable[[Segment], None] | None = field(default=None, compare=False)
    cancelled: bool = field(default=False, compare=False)


def pick_device(device: str, compute_type: str) -> tuple[str, str]:
    """'auto' picks CUDA with float16 when a GPU is visible, else CPU with int8."""
    if device == "auto":
        try:
            import ctranslate2

            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        except Exception:  # no CUDA runtime at all
            device = "cpu"
    if compute_type == "auto":
        compute_type = "float16" if device == "cuda" else "int8"
    return device, compute_type


def batch_limits(device: str, batch: int) -> tuple[int, int, int]:
    """(largest batch of finals, of partials, of encoder inputs); batch 0 means choose.

    On a CPU with one thread per worker, four 10 s windows decoded together took 60 ms each
    against 103 ms alone, with the encoder run two at a time (larger encoder batches were slower
    per item); eight were no better than four. Partials go two at a time there: a batch cannot be
    interrupted, and a shorter one holds its worker for less (docs/performance.md). On CUDA the
    whole batch goes through the encoder at once."""
    if batch <= 0:
        batch = 16 if device == "cuda" else 4
    if device == "cuda":
        return batch, batch, batch
    return batch, min(batch, 2), min(batch, 2)


def decode_workers(device: str, workers: int, threads: int, cores: int) -> tuple[int, int]:
    """(workers, threads per worker); 0 means choose. On a CPU, one worker per core (at most 4), and
    the cores shared out among the workers (cores // workers threads each, at least 1: one thread
    each up to 4 cores, two each on 8): on 2 cores two 1-thread workers finished a burst of 8 turns' finals in 0.98 s p95
    where one 2-thread worker took 1.24-1.45 s, and three were no better (docs/performance.md).
    On CUDA one worker: decodes share the one device."""
    if workers <= 0:
        workers = 1 if device == "cuda" else max(1, min(cores, 4))
    if threads <= 0:
        threads = max(1, cores // workers)
    return workers, threads


class WhisperRuntime:
    """Async front of a faster-whisper model; `transcribe` never blocks the event loop."""

    def __init__(
        self,
        model: Any,
        name: str,
        *,
        multilingual: bool,
        queue_size: int = 32,
        on_queue_depth: Callable[[int], None] | None = None,
        on_inference: Callable[[str, float], None] | None = None,
        on_dropped: Callable[[], None] | None = None,
        on_batch: Callable[[str, int], None] | None = None,
        workers: int = 1,
        batch: int = 1,
        partial_batch: int = 0,
        encode_batch: int = 1,
    ) -> None:
        self.model = model
        self.name = name
        self.multilingual = multilingual
        self._queue_size = queue_size
        self._heap: list[_Request] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._running = 0
        self._on_queue_depth = on_queue_depth or (lambda n: None)
        self._on_inference = on_inference or (lambda k, s: None)
        self._on_dropped = on_dropped or (lambda: None)
        self._on_batch = on_batch or (lambda k, n: None)
        self._batch = max(1, batch)
        self._encode_batch = max(1, encode_batch)
        self._idle = 0  # workers waiting for work
        self._partial_batch = max(1, min(partial_batch or batch, batch))
        self._partial_slots = max(1, workers - 1)
        self._partial_batches = 0  # partial batches being decoded
        # `workers` threads take requests from the one queue, most urgent first (the model must
        # have as many CTranslate2 workers, `num_workers`, for their decodes to run in parallel).
        self._threads = [threading.Thread(target=self._work, name=f"whisper-runtime-{i}", daemon=True)
                         for i in range(max(1, workers))]
        for t in self._threads:
            t.start()

    @classmethod
    def load(
        cls, name: str, *, data_dir: Path, device: str = "auto", compute_type: str = "auto",
        threads: int = 0, workers: int = 0, batch: int = 0, **kwargs: Any,
    ) -> WhisperRuntime:
        from faster_whisper import WhisperModel

        path = resolve_stt_model(name, data_dir)
        device, compute_type = pick_device(device, compute_type)
        workers, threads = decode_workers(device, workers, threads, os.cpu_count() or 1)
        batch, partial_batch, encode_batch = batch_limits(device, batch)
        log.info("loading Whisper %s from %s on %s/%s, %d worker(s) of %d thread(s), batches up to %d",
                 name, path, device, compute_type, workers, threads, batch)
        model = WhisperModel(str(path), device=device, compute_type=compute_type, cpu_threads=threads,
                             num_workers=max(1, workers))
        runtime = cls(model, name, multilingual=bool(model.model.is_multilingual), workers=workers, batch=batch,
                      partial_batch=partial_batch, encode_batch=encode_batch, **kwargs)
        runtime._warm_up()
        return runtime

    @property
    def pending(self) -> int:
        """Requests queued or running (the GPU lane's gate reads this)."""
        with self._cond:
            return len(self._heap) + self._running

    async def transcribe(
        self, audio: np.ndarray, kind: Kind, options: DecodeOptions, key: Any = None,
        on_segment: Callable[[Segment], None] | None = None,
    ) -> DecodeResult:
        """Decode 16 kHz float32 audio. Partials are refused (RuntimeBusy) when the queue is full.

        `on_segment` is called on the event loop for each segment as it is decoded (offline path).
        """
        loop = asyncio.get_running_loop()
        req = _Request(_PRIORITY[kind], next(self._seq), kind, audio, options, key, loop.create_future(), loop,
                       on_segment)
        with self._cond:
            if self._closed:
                raise RuntimeError("speech runtime is shut down")
            if kind == "partial" and key is not None:
                for old in self._heap:  # a newer partial of the same session supersedes a queued one
                    if old.kind == "partial" and old.key == key and not old.cancelled:
                        old.cancelled = True
                        self._on_dropped()
                        loop.call_soon(_cancel_future, old.future)
            live = sum(1 for r in self._heap if not r.cancelled)
            if live >= self._queue_size and kind != "final":
                if kind == "partial":
                    self._on_dropped()
                raise RuntimeBusy("speech recognition is at capacity; try again shortly")
            heapq.heappush(self._heap, req)
            self._on_queue_depth(live + 1)
            self._cond.notify()
        try:
            return await req.future
        except asyncio.CancelledError:
            req.cancelled = True
            raise

    async def aclose(self) -> None:
        with self._cond:
            self._closed = True
            for r in self._heap:
                r.loop.call_soon_threadsafe(_cancel_future, r.future)
            self._heap.clear()
            self._cond.notify_all()
        for t in self._threads:
            await asyncio.to_thread(t.join, 10)

    # --- worker thread -------------------------------------------------------------------------

    def _next(self, below: int | None = None) -> list[_Request] | None:
        """Take the most urgent live request (only if more urgent than `below`) with the queued
        requests that can be decoded in one batch with it; blocks if below is None."""
        with self._cond:
            while True:
                batch = self._take(below)
                if batch:
                    return batch
                if below is not None or self._closed:
                    return None
                self._idle += 1
                self._cond.wait()
                self._idle -= 1

    def _take(self, below: int | None) -> list[_Request]:
        """With the lock held. Partials run on at most `workers - 1` workers at once, so a final
        always finds one free instead of waiting behind a batch of partials it cannot preempt.
        The batch is shared with the idle workers, so a second core is not left waiting while
        one decodes everything."""
        self._heap = [r for r in self._heap if not r.cancelled]
        partials_free = self._partial_slots - self._partial_batches
        ready = [r for r in self._heap if (below is None or r.priority < below)
                 and (r.kind != "partial" or partials_free > 0)]
        if not ready:
            heapq.heapify(self._heap)
            return []
        first = min(ready)
        batch = [first]
        if self._batch > 1 and first.kind != "offline" and _windowed(first):
            frames = _window_frames(len(first.audio), first.options)
            fits = sorted(r for r in ready if r is not first and r.kind == first.kind and batchable(r.options, first.options)
                          and _windowed(r) and _window_frames(len(r.audio), r.options) == frames)
            helpers = self._idle if first.kind != "partial" else min(self._idle, partials_free - 1)
            share = math.ceil((len(fits) + 1) / (helpers + 1))
            limit = self._partial_batch if first.kind == "partial" else self._batch
            batch += fits[: min(limit, share) - 1]
        chosen = {id(r) for r in batch}
        self._heap = [r for r in self._heap if id(r) not in chosen]
        heapq.heapify(self._heap)
        self._running += len(batch)
        self._partial_batches += first.kind == "partial"
        self._on_queue_depth(len(self._heap))
        return batch

    def _work(self) -> None:
        while (batch := self._next()) is not None:
            self._serve(batch)

    def _serve(self, batch: list[_Request]) -> None:
        try:
            t0 = time.perf_counter()
            results = (self._decode_batch([r.audio for r in batch], batch[0].options, batch[0].kind != "partial",
                                          [r.options for r in batch])
                       if len(batch) > 1 else [self._decode(batch[0])])
            took = time.perf_counter() - t0
            self._on_batch(batch[0].kind, len(batch))
            for req, result in zip(batch, results, strict=True):
                self._on_inference(req.kind, took)
                req.loop.call_soon_threadsafe(_set_result, req.future, result)
        except BaseException as exc:  # the sessions get the error; the runtime keeps serving
            log.exception("Whisper decode failed")
            for req in batch:
                req.loop.call_soon_threadsafe(_set_exception, req.future, exc)
        finally:
            with self._cond:
                self._running -= len(batch)
                if batch[0].kind == "partial":
                    self._partial_batches -= 1
                    self._cond.notify_all()  # a worker may be waiting for a partial slot

    def _decode(self, req: _Request) -> DecodeResult:
        if req.kind != "offline" and _windowed(req):
            return self._decode_batch([req.audio], req.options, req.kind != "partial")[0]
        t0 = time.perf_counter()
        segments, info = self._segments(req.audio, req.options)
        kept: list[Segment] = []
        o = req.options
        redecode = None if req.kind == "partial" else (lambda piece: self._file_segments(piece, o))
        for seg in segments:
            if req.cancelled:
                break
            for judged in self._judge(req.audio, _segment(seg), redecode):
                kept.append(judged)
                if req.on_segment is not None:
                    req.loop.call_soon_threadsafe(req.on_segment, judged)
            if req.kind == "offline":
                # Let live work overtake a long file between its segments.
                while (urgent := self._next(below=req.priority)) is not None:
                    self._serve(urgent)
        text = " ".join(s.text for s in kept).strip()
        return DecodeResult(text, tuple(kept), info.language, info.duration, time.perf_counter() - t0)

    def _file_segments(self, audio: np.ndarray, o: DecodeOptions) -> list[Segment]:
        """`audio` decoded through faster-whisper's segments, each judged (`_judge`)."""
        segments, _ = self._segments(audio, o)
        return [judged for seg in segments
                for judged in self._judge(audio, _segment(seg), lambda piece: self._file_segments(piece, o))]

    def _judge(self, audio: np.ndarray, seg: Segment,
               redecode: Callable[[np.ndarray], list[Segment]] | None) -> list[Segment]:
        """What is kept of a decoded segment of `audio`: nothing if it is no speech; if its text
        looks like a repetition loop, the audio under it decoded again in two pieces by `redecode`
        (each judged the same way), so speech that really repeats is kept and a decoder loop is
        not; a piece too short to split keeps its text once the loop is cut out of it, if that
        no longer looks like one. Whisper's own fallback (temperatures) stalls the live path for
        seconds; shorter windows are as good at telling the two apart and cost what they decode."""
        from faster_whisper.transcribe import get_compression_ratio

        if not speech_like(seg.text, seg.no_speech_prob, seg.avg_logprob):
            return []
        text = cut_repetition_loops(seg.text.strip())
        if not looks_like_loop(seg.compression_ratio):
            return [dataclasses.replace(seg, text=text)]
        a, b = max(0, int(seg.start * _RATE)), min(len(audio), math.ceil(seg.end * _RATE))
        if redecode is not None and b - a >= 2 * _MIN_PIECE:
            piece = audio[a:b]
            cut = quiet_split(piece, _RATE)
            log.debug("a %.1f s window decoded as a loop (ratio %.2f): decoding it again in two",
                      (b - a) / _RATE, seg.compression_ratio)
            return [shifted(s, (a + lo) / _RATE) for lo, hi in ((0, cut), (cut, len(piece)))
                    for s in redecode(piece[lo:hi])]
        ratio = get_compression_ratio(text)
        return [] if looks_like_loop(ratio) else [dataclasses.replace(seg, text=text, compression_ratio=ratio)]

    def _decode_batch(self, batch: list[np.ndarray], o: DecodeOptions, rescue: bool = False,
                      each: list[DecodeOptions] | None = None) -> list[DecodeResult]:
        """Live decodes of one window size and one set of options: one encoder pass over a window
        just longer than the audio (in groups of `encode_batch`), then one greedy/beam decoding of
        the whole batch. faster-whisper pads every input to 30 s (its `chunk_length` does not change
        that), so the live path calls CTranslate2 directly with a shorter mel window. `rescue`:
        a window that decodes as a loop is decoded again in pieces (`_judge`; not for partials)."""
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

        t0 = time.perf_counter()
        m = self.model
        frames = _window_frames(len(batch[0]), o)
        feats = []
        for audio in batch:
            f = m.feature_extractor(audio)[:, :frames]
            feats.append(np.pad(f, ((0, 0), (0, frames - f.shape[1]))) if f.shape[1] < frames else f)
        if len(batch) <= self._encode_batch:
            encoded = m.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(feats))),
                                     to_cpu=False)
        else:  # CPU: a large encoder batch is slower per item than a few small ones
            parts = [np.array(m.model.encode(ctranslate2.StorageView.from_array(
                np.ascontiguousarray(np.stack(feats[i : i + self._encode_batch]))), to_cpu=True))
                for i in range(0, len(feats), self._encode_batch)]
            encoded = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.concatenate(parts)))
        language = (o.language or None) if self.multilingual else "en"
        languages = ([language] * len(batch) if language is not None
                     else [r[0][0][2:-2] for r in m.model.detect_language(encoded)])
        tokenizers = {lang: Tokenizer(m.hf_tokenizer, self.multilingual, task="transcribe", language=lang)
                      for lang in set(languages)}
        tok = tokenizers[languages[0]]
        # Each item's prompt and prefix (partial_window.py); a batch's prompts must be as long.
        each = each or [o] * len(batch)
        previous = [tok.encode(" " + e.prompt.strip())[-(m.max_length // 2 - 1):] if e.prompt else [] for e in each]
        shortest = min(len(p) for p in previous)
        prompts = [m.get_prompt(tokenizers[lang], p[len(p) - shortest:], without_timestamps=True, prefix=e.prefix or None)
                   for lang, p, e in zip(languages, previous, each, strict=True)]
        forced = [len(tok.encode(" " + e.prefix.strip())) if e.prefix else 0 for e in each]  # returned with the decode
        # Speech runs at well under 10 tokens a second: the cap bounds any decoder loop.
        caps = [min(224, int(len(audio) / 16000 * 10) + 10) + f for audio, f in zip(batch, forced, strict=True)]
        found = m.model.generate(
            encoded, prompts, beam_size=o.beam_size, max_length=max(map(len, prompts)) + max(caps),
            # After a forced prefix the decode may end at once (nothing new said yet).
            return_scores=True, return_no_speech_prob=True, suppress_blank=not any(e.prefix for e in each),
            suppress_tokens=get_suppressed_tokens(tok, [-1]),
        )
        token_lists = [[x for x in res.sequences_ids[0] if x < tokenizers[lang].eot][:cap]
                       for res, lang, cap in zip(found, languages, caps, strict=True)]
        words_of = (self._align(batch, token_lists, languages, tokenizers, encoded)
                    if any(e.word_timestamps for e in each) else [()] * len(batch))
        took = time.perf_counter() - t0
        results = []
        for audio, res, lang, tokens, words in zip(batch, found, languages, token_lists, words_of, strict=True):
            t = tokenizers[lang]
            text = t.decode(tokens).strip()
            avg_logprob = res.scores[0] * len(tokens) / (len(tokens) + 1) if tokens else -10.0
            duration = len(audio) / 16000
            ratio = get_compression_ratio(text) if text else 0.0
            redecode = (lambda piece: list(self._decode_batch([piece], o, True)[0].segments)) if rescue else None
            kept = tuple(self._judge(audio, Segment(0.0, duration, text, avg_logprob, res.no_speech_prob, ratio,
                                                    words), redecode))
            results.append(DecodeResult(" ".join(s.text for s in kept), kept, lang, duration, took))
        return results

    def _align(self, batch: list[np.ndarray], token_lists: list[list[int]], languages: list[str],
               tokenizers: dict[str, Any], encoded: Any) -> list[tuple[Word, ...]]:
        """Word times of live decodes from the cross-attention over the decode's own encoder
        output (faster-whisper's alignment: one decoder pass over the decoded tokens, no second
        decode). A batch whose detected languages differ (a multilingual model) gets none."""
        from faster_whisper.transcribe import merge_punctuations

        none: list[tuple[Word, ...]] = [()] * len(batch)
        if len(set(languages)) != 1 or not any(token_lists):
            return none
        tok = tokenizers[languages[0]]
        frames = [max(1, len(audio) // 160) for audio in batch]  # the speech, not the window's padding
        aligned = self.model.find_alignment(tok, [t or [tok.eot] for t in token_lists], encoded, frames)
        out: list[tuple[Word, ...]] = []
        for tokens, words in zip(token_lists, aligned, strict=True):
            if not tokens:
                out.append(())
                continue
            merge_punctuations(words, "\"'“¿([{-", "\"'.。,，!！?？:：”)]}、")
            out.append(tuple(Word(w["word"], float(w["start"]), float(w["end"]), float(w["probability"]))
                             for w in words if w["word"].strip()))
        return out

    def _segments(self, audio: np.ndarray, o: DecodeOptions) -> tuple[Iterator[Any], Any]:
        language = o.language if self.multilingual else "en"
        kwargs: dict[str, Any] = dict(
            language=language or None,
            beam_size=o.beam_size,
            temperature=0.0,  # fallback re-decodes stall for seconds on the live path
            condition_on_previous_text=False,
            # Past one window, timestamps always: Whisper then seeks to the end of the last whole
            # segment it decoded; without them it jumps 30 s on, and a window whose decode stopped
            # early (after one sentence of many) lost the rest (REST dropped 57 of 135 words).
            without_timestamps=not o.timestamps and len(audio) <= _MAX_WINDOW * _RATE,
            vad_filter=o.vad_filter,
            initial_prompt=o.prompt or None,
            word_timestamps=o.word_timestamps,
            task=o.task if self.multilingual else "transcribe",
        )
        return self.model.transcribe(audio, **kwargs)  # type: ignore[no-any-return]

    def _warm_up(self) -> None:
        # First calls pay for allocation; do it before the node says it is ready.
        silence = np.zeros(16000, dtype=np.float32)
        list(self._segments(silence, DecodeOptions())[0])
        self._decode_batch([silence], DecodeOptions())
        if self._batch > 1:
            self._decode_batch([silence] * min(self._batch, 2 * self._encode_batch), DecodeOptions())


def _segment(seg: Any) -> Segment:
    """One of faster-whisper's segments as ours."""
    words = tuple(Word(w.word, float(w.start), float(w.end), float(w.probability)) for w in (seg.words or ()))
    return Segment(seg.start, seg.end, seg.text, seg.avg_logprob, seg.no_speech_prob, seg.compression_ratio, words)


def _windowed(req: _Request) -> bool:
    """Short enough for one live window (longer live audio goes through faster-whisper's segments)."""
    return len(req.audio) <= (_MAX_WINDOW - req.options.window_pad) * 16000


def _window_frames(samples: int, o: DecodeOptions) -> int:
    """Mel frames of the live window for this much 16 kHz audio: audio + pad, at least min_window."""
    return int(min(_MAX_WINDOW, max(o.min_window, samples / 16000 + o.window_pad)) * 100)


def _set_result(fut: asyncio.Future[DecodeResult], result: DecodeResult) -> None:
    if not fut.done():
        fut.set_result(result)


def _set_exception(fut: asyncio.Future[DecodeResult], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def _cancel_future(fut: asyncio.Future[DecodeResult]) -> None:
    if not fut.done():
        fut.cancel()
