"""A session's speech-to-text: VAD -> endpointer -> partial and final decodes on the shared runtime.

Transport-agnostic: 16 kHz float32 audio goes in through `push_audio`, `SttEvent`s come out through
the `emit` callback. Decodes run as tasks in the session's TaskGroup; the model call itself runs on
the runtime's worker thread, never on the event loop.

Latency: when the voice pauses (160 ms of silence) the turn so far is decoded speculatively; if
the endpointer then ends the turn with no new speech, that result is the final transcript, so the
silence wait hides the decode. Speech that resumes discards it. Its words are shown as soon as it
is done (where they agree with the last partial's), not a silence wait later with the final; and
the final keeps the spelling of words already shown where it says the same (numbers: '4'/'four').
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

import numpy as np

from kombain.streaming.end_of_turn import (
    TurnPredictor,
    complete_probability,
    schedule_for,
)
from kombain.streaming.endpointer import (
    Endpointer,
    SpeechPaused,
    SpeechStarted,
    SpeechStopped,
    TurnDetection,
    VoiceOnset,
    VoiceOnsetCancelled,
)
from kombain.streaming.items import new_item_id
from kombain.streaming.smart_turn import WINDOW_SAMPLES
from kombain.streaming.speaker_tracker import SpeakerTracker
from kombain.streaming.stabilizer import Stabilizer, keep_shown
from kombain.streaming.stt_config import SttConfig
from kombain.streaming.stt_events import (
    ClearedEvent,
    CommittedEvent,
    SpeechStartedEvent,
    SpeechStoppedEvent,
    SttEvent,
    TranscriptCompletedEvent,
    TranscriptDeltaEvent,
    TranscriptFailedEvent,
    VoiceOnsetCancelledEvent,
    VoiceOnsetEvent,
)
from kombain.streaming.turn_audio import Preroll, Turn
from kombain.streaming.vad import FRAME_SAMPLES, VadStream
from kombain.streaming.whisper_runtime import (
    DecodeOptions,
    DecodeResult,
    RuntimeBusy,
    WhisperRuntime,
    Word,
)

log = logging.getLogger("kombain.stt")

RATE = 16000
# Silence after the last voiced frame in a final (and the speculative decode it reuses): the pause
# itself, so that decode starts when the pause is seen (WER same for 0-200 ms: loadtest/tail_sweep.py).
_TAIL_SAMPLES = RATE * 160 // 1000
_MIN_DECODE_SAMPLES = RATE * 250 // 1000


class StreamingTranscriber:
    """One session's recogniser. Call `push_audio`, `commit`, `clear`; run `run()` for its lifetime."""

    def __init__(
        self,
        runtime: WhisperRuntime,
        vad: VadStream,
        config: SttConfig,
        emit: Callable[[SttEvent], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        on_vad_seconds: Callable[[float], None] | None = None,
        turn_predictor: TurnPredictor | None = None,
        on_turn_check: Callable[[float], None] | None = None,
        on_semantic_fallback: Callable[[], None] | None = None,
        on_partial_late: Callable[[], None] | None = None,
        embed_voice: Callable[[np.ndarray], Awaitable[np.ndarray]] | None = None,
        on_tentative: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self.runtime = runtime
        # The turn so far, decoded at a pause while the turn is still open: (item id, its words),
        # or (item id, None) once the caller goes on or the buffer is cleared. A call prepares a
        # reply from it (a speculative reply) that it releases when the turn ends with these words.
        self._on_tentative = on_tentative or (lambda item_id, text: None)
        self._embed_voice = embed_voice
        self._speakers = SpeakerTracker()
        self.vad = vad
        self.config = config
        self._emit = emit
        self._clock = clock
        self._on_vad = on_vad_seconds or (lambda s: None)
        self._predictor = turn_predictor
        self._on_turn_check = on_turn_check or (lambda p: None)
        self._on_fallback = on_semantic_fallback or (lambda: None)
        self._on_partial_late = on_partial_late or (lambda: None)
        self._endpointer = Endpointer(self._effective(config.turn_detection))
        # Audio from an 8 kHz source (a phone line): semantic_vad uses the schedule calibrated on it.
        self.narrowband = False
        self._turn_check: asyncio.Task[None] | None = None
        self._stabilizer = Stabilizer()
        self._total = 0  # samples received
        self._vad_pos = 0  # samples the VAD has seen
        self._arrivals: deque[tuple[int, float]] = deque(maxlen=4096)  # (end sample, wall time)
        self._preroll = Preroll()
        self._turn: Turn | None = None
        self._manual: Turn | None = None  # buffer when turn detection is off
        self._manual_voiced = False
        self._last_item: str | None = None
        self._finals: asyncio.Task[None] | None = None  # chain, so finals leave in turn order
        self._partial_task: asyncio.Task[None] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()
        self._audio_arrived = asyncio.Event()

    # --- lifetime --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Owns the decode tasks; returns after `close()` once pending finals are delivered."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            await self._stop.wait()
            if self._finals is not None:
                await self._finals
            if self._partial_task is not None:
                self._partial_task.cancel()
        self._tg = None

    def close(self) -> None:
        self._stop.set()

    @property
    def speaking(self) -> bool:
        return self._turn is not None

    @property
    def position_ms(self) -> int:
        """How much input audio has been analysed so far (session clock, ms)."""
        return self._total * 1000 // RATE

    @property
    def last_voiced_ms(self) -> int:
        """End of the last voiced frame the VAD saw (session clock, ms)."""
        return self._endpointer.last_voiced_end * 1000 // RATE

    def update_config(self, config: SttConfig) -> None:
        self.config = config
        self._endpointer.config = self._effective(config.turn_detection)

    def _effective(self, td: TurnDetection | None) -> TurnDetection:
        """semantic_vad without its model (it failed to load) falls back to server_vad."""
        td = td or TurnDetection()
        if td.semantic and self._predictor is None:
            log.warning("semantic_vad asked for, but the end-of-turn model is not loaded: using server_vad")
            self._on_fallback()
            return TurnDetection(threshold=td.threshold, prefix_padding_ms=td.prefix_padding_ms,
                                 min_speech_ms=td.min_speech_ms)
        return td

    # --- input -----------------------------------------------------------------------------------

    def push_audio(self, samples: np.ndarray) -> None:
        """Feed 16 kHz float32 audio. Runs VAD (sub-millisecond per frame) and schedules decodes."""
        if len(samples) == 0:
            return
        now = self._clock()
        start = self._total
        self._total += len(samples)
        self._arrivals.append((self._total, now))
        self._audio_arrived.set()
        t0 = time.perf_counter()
        probs = self.vad.process(samples)
        self._on_vad(time.perf_counter() - t0)

        if self.config.turn_detection is None:
            if self._manual is None:
                self._manual = Turn(new_item_id(), start, [])
            self._manual.chunks.append(samples)
            self._manual.length += len(samples)
            threshold = self._endpointer.config.threshold
            self._manual_voiced = self._manual_voiced or any(p >= threshold for p in probs)
            if self._manual.length >= self.config.max_turn_s * RATE:
                self.commit()  # bounded as a server-VAD turn is: a client that never commits holds max_turn_s
            return

        # Audio enters the turn buffer (or the pre-roll) before the VAD events it causes are
        # handled, so a speculative decode launched now covers everything up to this point.
        if self._turn is not None:
            self._turn.chunks.append(samples)
            self._turn.length += len(samples)
        else:
            keep = (self._endpointer.config.prefix_padding_ms + 200) * RATE // 1000 + FRAME_SAMPLES
            self._preroll.push(samples, keep)
        for p in probs:
            self._vad_pos += FRAME_SAMPLES
            for ev in self._endpointer.feed(p, self._vad_pos, FRAME_SAMPLES):
                if isinstance(ev, VoiceOnset):
                    self._emit(VoiceOnsetEvent(self._arrival_time(ev.start_sample)))
                elif isinstance(ev, VoiceOnsetCancelled):
                    self._emit(VoiceOnsetCancelledEvent())
                elif isinstance(ev, SpeechStarted):
                    self._begin_turn(ev.start_sample)
                elif isinstance(ev, SpeechPaused) and self._turn is not None:
                    self._speculate(self._turn, ev.end_sample)
                    if self._endpointer.config.semantic and self._predictor is not None:
                        self._check_turn(self._turn, ev.end_sample)
                elif isinstance(ev, SpeechStopped) and self._turn is not None:
                    self._end_turn(ev.end_sample)
        turn = self._turn
        if turn is None:
            return
        if turn.speculative is not None and self._endpointer.last_voiced_end > turn.speculative_end - _TAIL_SAMPLES:
            turn.speculative.cancel()  # speech resumed: the guess is stale
            turn.speculative = None
            self._on_tentative(turn.item_id, None)
        if turn.length >= self.config.max_turn_s * RATE:
            self._end_turn(self._total, forced=True)
        elif self.config.partials and self._partial_due(turn):
            self._partial_task = self._spawn(self._partial(turn, self._total))

    def commit(self) -> str | None:
        """Client commit: end the current turn (or the manual buffer) now. Returns an error or None."""
        if self.config.turn_detection is None:
            turn = self._manual
            if turn is None or turn.length < FRAME_SAMPLES:
                return "input audio buffer is empty or shorter than 32 ms; append audio before committing"
            self._manual = None
            voiced, self._manual_voiced = self._manual_voiced, False
            self._commit_turn(turn, turn.start + turn.length, voiced=voiced, speech_end=turn.start + turn.length)
            return None
        if self._turn is None:
            return "no speech in the input audio buffer to commit"
        self._end_turn(self._total, forced=True)
        return None

    def clear(self) -> None:
        """Drop uncommitted audio (input_audio_buffer.clear)."""
        if self._turn is not None and self._turn.speculative is not None:
            self._turn.speculative.cancel()
            self._on_tentative(self._turn.item_id, None)
        self._turn = None
        self._manual = None
        self._manual_voiced = False
        self._endpointer.reset()
        self._stabilizer.reset()
        self._emit(ClearedEvent())

    # --- turns -----------------------------------------------------------------------------------

    def _begin_turn(self, voiced_start: int) -> None:
        pad = self._endpointer.config.prefix_padding_ms * RATE // 1000
        start, audio = self._preroll.take(max(0, voiced_start - pad), self._total)
        self._turn = Turn(new_item_id(), start, [audio], len(audio), last_partial_at=start)
        self._stabilizer.reset()
        self._emit(SpeechStartedEvent(self._turn.item_id, voiced_start * 1000 // RATE))

    def _end_turn(self, voiced_end: int, forced: bool = False) -> None:
        turn = self._turn
        assert turn is not None
        self._turn = None
        self._endpointer.reset()
        if self._partial_task is not None and not self._partial_task.done():
            self._partial_task.cancel()  # too late to show: the final supersedes it
            self._on_partial_late()
        self._emit(SpeechStoppedEvent(turn.item_id, voiced_end * 1000 // RATE))
        end = self._total if forced else min(self._total, voiced_end + _TAIL_SAMPLES)
        self._commit_turn(turn, end, speech_end=voiced_end)

    def _commit_turn(self, turn: Turn, end: int, *, speech_end: int, voiced: bool = True) -> None:
        decided = self._clock()
        speech_end_at = self._arrival_time(speech_end)
        self._emit(CommittedEvent(turn.item_id, self._last_item))
        self._last_item = turn.item_id
        spec = turn.speculative if turn.speculative_end == end else None
        if turn.speculative is not None and spec is None:
            turn.speculative.cancel()
        audio = turn.audio(end)
        previous = self._finals
        # This turn's shown words (the next turn resets them); a manual buffer shows none.
        shown = list(self._stabilizer.published) if self.config.turn_detection is not None else []
        self._finals = self._spawn(self._finalize(turn, audio, spec, (speech_end_at, decided), previous, voiced,
                                                  shown))

    async def _finalize(
        self,
        turn: Turn,
        audio: np.ndarray,
        spec: asyncio.Task[DecodeResult | None] | None,
        times: tuple[float, float],
        previous: asyncio.Task[None] | None,
        voiced: bool,
        shown: list[str],
    ) -> None:
        result: DecodeResult | None = None
        failed: str | None = None
        if spec is not None:
            try:
                result = await spec
            except asyncio.CancelledError:
                if _cancelling():
                    raise
        try:
            if result is None and voiced and len(audio) >= _MIN_DECODE_SAMPLES:
                result = await self.runtime.transcribe(audio, "final", self._options())
        except Exception as exc:
            failed = f"{type(exc).__name__}: {exc}"
        if previous is not None:
            await asyncio.shield(previous)
        if failed:
            self._emit(TranscriptFailedEvent(turn.item_id, "transcription_failed", failed))
            return
        text = keep_shown(shown, result.text) if result else ""
        language = result.language if result else (self.config.language or "en")
        words = await self._word_times(turn.start, audio, result) if self.config.word_timestamps else ()
        speaker = await self._speaker(audio) if self.config.speaker_labels and text else None
        self._emit(
            TranscriptCompletedEvent(
                turn.item_id, text, turn.start * 1000 // RATE, (turn.start + len(audio)) * 1000 // RATE,
                self._clock() - times[1], language, result.inference_seconds if result else 0.0, *times,
                words=words, speaker=speaker,
            )
        )

    async def _speaker(self, audio: np.ndarray) -> str | None:
        """The turn's speaker among the session's (SpeakerTracker), from its voice embedding;
        None when no encoder is available (logged)."""
        if self._embed_voice is None:
            return None
        try:
            embedding = await self._embed_voice(audio)
        except Exception as exc:
            if _cancelling():
                raise
            log.warning("speaker label unavailable: %s", exc)
            return None
        return self._speakers.assign(embedding)

    async def _word_times(self, start: int, audio: np.ndarray, result: DecodeResult | None) -> tuple[Word, ...]:
        """The final's words on the session clock, their edges moved onto the turn's speech as
        Silero sees it (as on POST /v1/audio/transcriptions; ~1 ms per second of turn, in a thread)."""
        from dataclasses import replace

        from kombain.streaming.speech_regions import refine_word_times

        if result is None or not any(s.words for s in result.segments):
            return ()
        segments = await asyncio.to_thread(refine_word_times, self.vad.model, audio, result.segments)
        offset = start / RATE
        return tuple(replace(w, start=w.start + offset, end=w.end + offset) for s in segments for w in s.words)

    def _speculate(self, turn: Turn, voiced_end: int) -> None:
        if turn.speculative is not None:
            turn.speculative.cancel()
        end = voiced_end + _TAIL_SAMPLES
        audio_needed = end - turn.start
        if audio_needed < _MIN_DECODE_SAMPLES:
            return
        turn.speculative_end = end
        turn.speculative = self._spawn(self._speculative_decode(turn, end))

    async def _speculative_decode(self, turn: Turn, end: int) -> DecodeResult | None:
        # The tail of silence is still arriving; wait for it rather than decode a shorter span.
        while self._total < end and self._turn is turn:
            self._audio_arrived.clear()
            await self._audio_arrived.wait()
        if self._turn is not turn and self._total < end:
            return None
        try:
            result = await self.runtime.transcribe(turn.audio(end), "final", self._options())
        except Exception:  # the final decodes again on its own; a guess must not fail the session
            log.warning("speculative decode failed", exc_info=True)
            return None
        if self._turn is turn:  # still in the silence
            if self.config.partials:  # words it agrees on with the last partial show now, not with the final
                self._publish(turn, result.text, end)
            if result.text.strip():  # as the final would read if the turn ended now (shown spellings kept)
                self._on_tentative(turn.item_id, keep_shown(list(self._stabilizer.published), result.text))
            self._audio_arrived.set()  # the end-of-turn check takes the words now, not at the next chunk
        return result

    # --- semantic end of turn --------------------------------------------------------------------

    def _check_turn(self, turn: Turn, voiced_end: int) -> None:
        if self._turn_check is not None:
            self._turn_check.cancel()
        self._turn_check = self._spawn(self._semantic_end(turn, voiced_end))

    async def _semantic_end(self, turn: Turn, voiced_end: int) -> None:
        """Ask the end-of-turn model at the pause and again, in steps, as the silence grows; a
        complete verdict ends the turn at once. The speculative decode's words refine the last
        verdict the moment they come (even while the model thinks about the next check); until
        then only a near-certain verdict ends the turn. The schedule's cap ends it regardless."""
        assert self._predictor is not None
        schedule = schedule_for(self._endpointer.config.eagerness, self.narrowband)
        check_ms = schedule.first_ms  # the silence at which the model is asked next
        verdict: float | None = None  # its last probability
        judged: tuple[int, bool] = (0, False)  # (verdicts so far, had words): what was last weighed
        verdicts = 0
        asking: asyncio.Task[float] | None = None
        try:
            while not self._gone(turn, voiced_end):
                self._audio_arrived.clear()  # set by new audio and by the speculative decode's words
                silence_ms = (self._total - voiced_end) * 1000 // RATE
                words = turn.speculative_text()
                if verdict is not None and (verdicts, words is not None) != judged:
                    judged = (verdicts, words is not None)
                    prob = complete_probability(verdict, words)
                    self._on_turn_check(prob)
                    if prob >= schedule.threshold(have_words=words is not None):
                        self._end_turn(voiced_end)
                        return
                if silence_ms >= schedule.cap_ms:
                    self._end_turn(voiced_end)
                    return
                if asking is None and silence_ms >= check_ms:
                    audio = turn.audio(self._total)[-WINDOW_SAMPLES:]
                    asking = asyncio.ensure_future(self._predictor.predict(audio))
                    check_ms = schedule.next_check(check_ms)
                if asking is not None and asking.done():
                    try:
                        verdict = asking.result()
                    except Exception:
                        log.warning("end-of-turn model failed; the silence timeout decides", exc_info=True)
                        return
                    asking, verdicts = None, verdicts + 1
                    continue
                arrived = asyncio.ensure_future(self._audio_arrived.wait())
                await asyncio.wait({arrived} if asking is None else {arrived, asking},
                                   return_when=asyncio.FIRST_COMPLETED)
                arrived.cancel()
        finally:
            if asking is not None:
                asking.cancel()

    def _gone(self, turn: Turn, voiced_end: int) -> bool:
        return self._turn is not turn or self._endpointer.last_voiced_end > voiced_end

    # --- partials --------------------------------------------------------------------------------

    def _partial_due(self, turn: Turn) -> bool:
        if (self._partial_task is not None and not self._partial_task.done()) or turn.speculative is not None:
            return False
        new_ms = (self._total - turn.last_partial_at) * 1000 // RATE
        idle_ms = self.config.idle_partial_interval_ms  # nobody waits on the decoder: sooner, so words show sooner
        return new_ms >= self.config.partial_interval_ms or (
            bool(idle_ms) and new_ms >= idle_ms and self.runtime.pending == 0)

    async def _partial(self, turn: Turn, end: int) -> None:
        turn.last_partial_at, window = end, turn.window  # it decodes past the settled words (partial_window.py)
        plan, audio = window.plan(end, self._options(), self._stabilizer.published), turn.audio(end)
        try:
            result = await self.runtime.transcribe(audio[plan.start:], "partial", plan.options, key=id(self))
        except RuntimeBusy:
            return
        except Exception:
            log.warning("partial decode failed", exc_info=True)
            return
        if (said := window.hypothesis(plan, result)) is not None and self._turn is turn:
            self._publish(turn, said, end)  # (a turn that ended has its final instead)
            window.settle(self._stabilizer.published, audio, end)

    def _publish(self, turn: Turn, hypothesis: str, end: int) -> None:
        """A decode of the turn up to `end`: words it agrees on with the one before are shown."""
        if delta := self._stabilizer.update(hypothesis):
            arrived = self._arrival_time(end)
            self._emit(TranscriptDeltaEvent(turn.item_id, delta, end * 1000 // RATE, self._clock() - arrived))

    def _arrival_time(self, sample: int) -> float:
        return next((t for end, t in self._arrivals if end >= sample), self._clock())

    # --- helpers ---------------------------------------------------------------------------------

    def _options(self) -> DecodeOptions:
        c = self.config
        return DecodeOptions(
            language=c.language, prompt=c.prompt, beam_size=c.beam_size,
            window_pad=c.window_pad, min_window=c.min_window, word_timestamps=c.word_timestamps,
        )

    def _spawn(self, coro):  # type: ignore[no-untyped-def]
        if self._tg is None:
            raise RuntimeError("StreamingTranscriber.run() is not running")
        return self._tg.create_task(coro)


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
