"""One caller, whatever the wire: audio and digits in, typed events out, reply audio to a port.

A `Call` joins the session's speech-to-text (VAD, turn detection, partial and final transcripts)
to its conversation (responder, synthesis, barge-in). It knows no protocol: transports decode
their media to float samples, call `push_audio` / `push_dtmf` / `commit` / `respond` / `cancel`,
render the events given to `emit`, and play reply audio written to their `AudioOutput`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import numpy as np

from kombain.streaming.audio import INTERNAL_RATE, Resampler

# The transport-facing types (call_types.py) are imported from here too.
from kombain.streaming.call_types import (
    AudioOutput,
    CallConfig,
    CallError,
    CallEvent,
    CallHooks,
    DtmfEvent,
    HangupEvent,
    IdleTimeoutEvent,
)
from kombain.streaming.conversation import (
    Conversation,
    ConversationEvent,
    ResponseAudio,
    ResponseFinished,
    ResponseOptions,
    TurnTiming,
)
from kombain.streaming.end_of_turn import TurnPredictor
from kombain.streaming.ingest import IngestPacer
from kombain.streaming.items import Item
from kombain.streaming.media_gap import MediaGap
from kombain.streaming.responders import Reply, Responder
from kombain.streaming.speculation import RESUMED
from kombain.streaming.stt_events import (
    CommittedEvent,
    SpeechStartedEvent,
    SpeechStoppedEvent,
    SttEvent,
    TranscriptCompletedEvent,
    TranscriptDeltaEvent,
    VoiceOnsetCancelledEvent,
    VoiceOnsetEvent,
)
from kombain.streaming.transcriber import StreamingTranscriber, SttConfig
from kombain.streaming.tts import VoicePool
from kombain.streaming.vad import SileroVadModel
from kombain.streaming.whisper_runtime import WhisperRuntime

log = logging.getLogger("kombain.call")

DTMF_DIGITS = frozenset("0123456789*#ABCD")
# Audio that arrives before `run()` has started is kept (up to this much) and fed once it has.
_EARLY_AUDIO_S = 5.0


@dataclass(slots=True)
class _PendingInterruption:
    item_id: str
    start_ms: int  # first voiced sample of the caller's speech (session clock)
    words: int = 0  # words heard so far that are not backchannels
    resumed: bool = False  # the caller fell silent short of the minimums: the reply goes on


# Silence after a held sound that did not reach the interruption minimums, before the reply resumes.
RESUME_AFTER_SILENCE_MS = 300

# Said while listening; never a reason to stop the speaker.
BACKCHANNELS = frozenset("""
uh-huh uh huh hm hmm mm mhm mm-hmm mmhmm ok okay yeah yes yep yup right sure alright oh ah
""".split())


def count_words(text: str) -> int:
    """Words in `text` that are not backchannels."""
    return sum(1 for w in re.findall(r"[a-z'-]+", text.lower()) if w.strip("-'") not in BACKCHANNELS)


class Call:
    """One caller's audio, turns and replies. Run `run()` for its life; `close()` ends it."""

    def __init__(self, runtime: WhisperRuntime, vad: SileroVadModel, config: CallConfig,
                 emit: Callable[[CallEvent], None], *, stt: SttConfig, output: AudioOutput | None = None,
                 tts: VoicePool | None = None, responder: Responder | None = None,
                 hooks: CallHooks | None = None, lead_s: float = 0.5, frame_ms: int = 100,
                 turn_predictor: TurnPredictor | None = None, ingest: IngestPacer | None = None,
                 call_id: str | None = None, clock: Callable[[], float] = time.monotonic,
                 embed_voice: Callable[[np.ndarray], Awaitable[np.ndarray]] | None = None,
                 speculate: bool = True) -> None:
        self.id = call_id or "call_" + secrets.token_hex(10)
        self.config = config
        self.model_name = runtime.name
        self._emit = emit
        self._stt_base = stt
        self._hooks = hooks or CallHooks()
        self._output = output
        if output is not None:
            output.bind(self.playback)  # playback reports come back through the port
        self._clock = clock
        self._resampler: Resampler | None = None
        self._ingest = ingest
        self._gap = MediaGap()  # media that stops counts as silence (streaming/media_gap.py)
        self.transcriber = StreamingTranscriber(runtime, vad.new_stream(), self._stt_config(), self._on_stt,
                                                clock=clock, on_vad_seconds=self._hooks.vad_seconds,
                                                turn_predictor=turn_predictor, on_turn_check=self._hooks.turn_check,
                                                on_partial_late=self._hooks.partial_late,
                                                on_semantic_fallback=self._hooks.semantic_fallback,
                                                embed_voice=embed_voice, on_tentative=self._on_tentative)
        self.responder = responder
        self.conversation: Conversation | None = None
        if tts is not None and responder is not None and config.conversation:
            self.conversation = Conversation(
                tts, responder, self._on_conversation, rate=config.output_rate, lead_s=lead_s,
                frame_ms=frame_ms, clock=clock, on_turn=self._hooks.turn, on_barge_in=self._hooks.barge_in,
                on_hold=self._hold_output, on_speculation=self._hooks.speculation,
            )
            self.conversation.speculate = speculate
            self._sync_conversation()
        self._running = False
        self._early: list[tuple[np.ndarray, int]] = []
        self._early_s = 0.0
        self._closed = asyncio.Event()
        # Set once run() can take commands (commit, clear, respond) as well as audio: a transport
        # may wait for it before it reads its peer's first messages.
        self.started = asyncio.Event()
        self._timer_kick = asyncio.Event()
        self._confirm: _PendingInterruption | None = None
        self._ignored_items: set[str] = set()  # turns that were backchannels during a reply
        self.hangup_reason: str | None = None
        self._heard_from: tuple[float, int] = (clock(), 0)  # last sign of the caller: (clock, audio ms)

    # --- lifetime --------------------------------------------------------------------------------

    @property
    def speaks(self) -> bool:
        return self.conversation is not None and self.config.conversation

    @property
    def busy(self) -> bool:
        """In a turn or a reply: the lane gate counts this call as voice work."""
        return self.transcriber.speaking or (self.conversation is not None and self.conversation.speaking)

    async def run(self) -> None:
        """The call's life: one TaskGroup for recognition, conversation and digit timeouts."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.transcriber.run())
            timer = None
            if self.conversation is not None:
                tg.create_task(self.conversation.run())
                timer = tg.create_task(self._digit_timer())
                idle = tg.create_task(self._idle_timer())
            gaps = tg.create_task(self._fill_media_gaps())
            await asyncio.sleep(0)  # let the transcriber enter its TaskGroup before early audio
            self._running = True
            early, self._early = self._early, []
            for samples, rate in early:
                self.push_audio(samples, rate)
            self.started.set()
            await self._closed.wait()
            gaps.cancel()
            if timer is not None:
                timer.cancel()
                idle.cancel()

    def close(self) -> None:
        self.transcriber.close()
        if self.conversation is not None:
            self.conversation.close()
        self._closed.set()

    # --- input -----------------------------------------------------------------------------------

    async def receive_audio(self, samples: np.ndarray, rate: int) -> None:
        """`push_audio` for a transport reading a peer that may send faster than real time: a long
        message is taken in half-second slices with the event loop free between them, and the call
        returns only once the caller is within its ingest allowance (`IngestPacer`)."""
        step = max(1, rate // 2)
        for i in range(0, len(samples), step):
            if i:
                await asyncio.sleep(0)
            self.push_audio(samples[i:i + step], rate)
        await self.paced()

    async def paced(self) -> None:
        """Yield the event loop, and wait while the caller is ahead of its ingest allowance; a
        transport's reader awaits this between messages (a backlog must not hold the loop)."""
        wait = self._ingest.delay() if self._ingest is not None else 0.0
        await asyncio.sleep(wait)

    def push_audio(self, samples: np.ndarray, rate: int) -> None:
        """Float32 mono audio at any supported rate, already decoded by the transport."""
        if len(samples) == 0:
            return
        if not self._running:
            # A client may send audio before the call has started; keep a bounded amount of it.
            if self._early_s < _EARLY_AUDIO_S:
                self._early.append((samples, rate))
                self._early_s += len(samples) / rate
            return
        self._hooks.audio_in(len(samples) / rate)
        self._gap.audio(len(samples) / rate, self._clock())
        if self._ingest is not None:
            self._ingest.add(len(samples) / rate)
        if self._resampler is None or self._resampler.in_rate != rate:
            self._resampler = Resampler(rate, INTERNAL_RATE)
            self.transcriber.narrowband = rate <= 8000  # a phone line: semantic_vad's phone schedule
        self.transcriber.push_audio(self._resampler.process(samples))
        if self._confirm is not None:
            self._check_interruption()

    async def _fill_media_gaps(self) -> None:
        """A caller whose audio stops while a turn is open (silence suppression, DTX, a client that
        sends only while speaking) is given the silence it did not send, so the turn ends and is
        answered as if the silence had come. A dead peer is still the transport's watchdog's to find."""
        behind = False
        while True:
            await asyncio.sleep(0.1)
            now = self._clock()
            if self.config.turn_detection is None or not self.transcriber.speaking:
                self._gap.idle(now)
                behind = False
                continue
            owed = self._gap.owed(now)
            # Behind on two ticks in a row: the audio is missing, not waiting in a socket behind a
            # stalled event loop (the reader has had a turn in between).
            if owed > 0 and behind:
                self._gap.audio(owed, now)
                self.transcriber.push_audio(np.zeros(int(owed * INTERNAL_RATE), np.float32))
            behind = owed > 0

    def push_dtmf(self, digit: str) -> None:
        """A key press. The responder may answer it at once, interrupting the reply."""
        if digit not in DTMF_DIGITS:
            raise CallError(f"{digit!r} is not a DTMF digit (0-9, *, #, A-D)", "invalid_dtmf")
        now = self._clock()
        self._hooks.dtmf()
        self._emit(DtmfEvent(digit, now))
        if self.conversation is None or self.responder is None:
            return
        replies = self.responder.dtmf(digit, now)
        self._timer_kick.set()
        if replies is not None:
            self.conversation.say_replies(list(replies))

    def commit(self) -> None:
        err = self.transcriber.commit()
        if err:
            raise CallError(err, "input_audio_buffer_commit_empty")

    def clear(self) -> None:
        self.transcriber.clear()

    def respond(self, instructions: str | None = None, say: str | None = None, hangup: bool = False,
                options: ResponseOptions | None = None) -> str:
        """Start a reply: `say` verbatim, or ask the responder. Returns the response id."""
        return self._conversation().create_response(instructions=instructions, say=say, hangup=hangup,
                                                    options=options)

    # --- the conversation's items ----------------------------------------------------------------

    def _conversation(self) -> Conversation:
        if self.conversation is None or not self.config.conversation:
            raise CallError("this call does not speak (transcription only, or no voice loaded)",
                            "responses_unavailable")
        return self.conversation

    def add_item(self, item: Item, previous_item_id: str | None = None) -> None:
        """Add a client's item (typed text, a function's output); `ItemError` if it cannot be."""
        self._conversation().add_item(item, previous_item_id)

    def item(self, item_id: str) -> Item:
        return self._conversation().items.get(item_id)

    def delete_item(self, item_id: str) -> None:
        self._conversation().items.delete(item_id)

    def truncate_item(self, item_id: str, content_index: int, audio_end_ms: int) -> Item:
        return self._conversation().truncate(item_id, content_index, audio_end_ms)

    def cancel(self, reason: str = "client_cancelled") -> bool:
        return self.conversation is not None and self.conversation.cancel(reason)

    def playback(self, response_id: str, position_ms: int, interrupted: bool = False) -> None:
        """The port's report that the caller has heard `position_ms` of a response (`interrupted`:
        the rest was dropped by a barge-in, and the reply is already cancelled)."""
        if self.conversation is not None and not interrupted:
            self.conversation.playback(response_id, position_ms)

    def update(self, config: CallConfig) -> None:
        self.config = config
        self.transcriber.update_config(self._stt_config())
        self._sync_conversation()

    def end(self, reason: str, goodbye: str | None = None) -> None:
        """Ask the transport to end the call, after speaking `goodbye` where the call can speak."""
        self.hangup_reason = self.hangup_reason or reason
        if goodbye and self.conversation is not None:
            # A goodbye is heard out: no speech, key or turn cuts it off.
            if self.conversation.say_replies([Reply(goodbye, hangup=True)], reason=reason, final=True) is not None:
                return
        self._hang_up(reason)

    # --- events ----------------------------------------------------------------------------------

    def _hang_up(self, reason: str) -> None:
        self.hangup_reason = self.hangup_reason or reason
        self._emit(HangupEvent(self.hangup_reason))

    def _hold_output(self, held: bool) -> None:
        if self._output is not None:
            self._output.hold(held)

    def _on_conversation(self, ev: ConversationEvent) -> None:
        if isinstance(ev, ResponseAudio):
            if self._output is not None:
                self._output.write(ev, self.config.output_rate)
            return
        if isinstance(ev, ResponseFinished):
            if ev.status == "cancelled" and self._output is not None:
                self._output.clear()  # barge-in: drop what the transport still holds
            self._hooks.response(ev.status)
            if self.responder is not None and ev.status == "completed" and self.conversation is not None:
                # Digit timeouts count from when the prompt was heard, not from when it was sent.
                self.responder.prompt_finished(self.conversation.played_until)
                self._timer_kick.set()
        self._emit(ev)
        if isinstance(ev, ResponseFinished) and ev.hangup:
            self._hang_up("hangup")

    def _on_stt(self, ev: SttEvent) -> None:
        conv = self.conversation
        if isinstance(ev, SpeechStartedEvent | SpeechStoppedEvent | TranscriptCompletedEvent):
            self._heard_from = (self._clock(), self.transcriber.position_ms)
        if isinstance(ev, VoiceOnsetEvent):
            if conv is not None:
                conv.voice_onset(ev.at)
            return
        if isinstance(ev, VoiceOnsetCancelledEvent):
            if conv is not None:
                conv.voice_onset_cleared()
            return
        if isinstance(ev, SpeechStartedEvent) and conv is not None:
            c = self.config
            defer = conv.speaking and conv.interrupt and (c.interrupt_min_speech_ms > 0 or c.interrupt_min_words > 0)
            if defer:
                self._confirm = _PendingInterruption(ev.item_id, ev.audio_start_ms)
            conv.speech_started(defer=defer)
            if defer:
                self._check_interruption()
        elif isinstance(ev, TranscriptDeltaEvent):
            self._hooks.partial_lag(ev.lag_s)
            if self._confirm is not None and self._confirm.item_id == ev.item_id:
                self._confirm.words += count_words(ev.delta)
                self._check_interruption()
        elif isinstance(ev, SpeechStoppedEvent):
            pending = self._confirm
            if pending is not None and pending.item_id == ev.item_id and conv is not None:
                # The turn ended before it counted as an interruption: a backchannel or a noise.
                self._confirm = None
                self._ignored_items.add(ev.item_id)
                conv.resume()
        elif isinstance(ev, TranscriptCompletedEvent):
            self._hooks.stt_final(ev.latency_s)
        self._emit(ev)
        if isinstance(ev, CommittedEvent) and conv is not None and self.config.conversation:
            conv.audio_committed(ev.item_id)  # the turn is an item now; its transcript follows
        if isinstance(ev, TranscriptCompletedEvent) and conv is not None and self.config.conversation:
            auto = self.config.turn_detection is not None and self.config.auto_respond
            if ev.item_id in self._ignored_items:
                self._ignored_items.discard(ev.item_id)  # the reply went on; this needs no answer
                auto = False
            conv.user_turn(ev.item_id, ev.transcript, TurnTiming(ev.speech_end_at, ev.decided_at, self._clock()),
                           audio_ms=max(0, ev.audio_end_ms - ev.audio_start_ms), respond=auto)

    def _on_tentative(self, item_id: str, words: str | None) -> None:
        """The turn's words at a pause (None: the caller went on): prepare the reply to them, to be
        released if the turn ends with these words (streaming/speculation.py)."""
        conv, c = self.conversation, self.config
        if conv is None:
            return
        if words is None:
            conv.drop_prepared(RESUMED)
        elif c.conversation and c.turn_detection is not None and c.auto_respond and self._confirm is None:
            conv.prepare(item_id, words)

    def _check_interruption(self) -> None:
        """Cancel the reply once the caller's speech is long enough and has enough words."""
        pending, conv = self._confirm, self.conversation
        if pending is None or conv is None:
            return
        if not conv.speaking:
            self._confirm = None
            return
        c = self.config
        last_voiced = self.transcriber.last_voiced_ms
        if last_voiced - pending.start_ms >= c.interrupt_min_speech_ms and pending.words >= c.interrupt_min_words:
            self._confirm = None
            conv.confirm_interruption()
        elif not pending.resumed and self.transcriber.position_ms - last_voiced >= RESUME_AFTER_SILENCE_MS:
            # A cough or an "uh-huh" followed by silence: let the reply go on now rather than when
            # the turn ends (which semantic_vad may stretch to seconds for an "unfinished" word).
            # More speech in the same turn can still confirm the interruption and cancel it.
            pending.resumed = True
            conv.resume()

    async def _idle_timer(self) -> None:
        """`idle_timeout_ms`: once the caller has been silent that long after the last reply was
        heard, their silence is a turn (empty) and the responder is asked to go on."""
        while True:
            conv, c = self.conversation, self.config
            wait = 1.0
            if conv is not None and c.conversation and c.turn_detection is not None and c.idle_timeout_ms:
                since = max(self._heard_from[0], conv.played_until)
                left = since + c.idle_timeout_ms / 1000 - self._clock()
                if left <= 0 and not self.busy:
                    end_ms = self.transcriber.position_ms
                    start_ms = min(end_ms, max(self._heard_from[1], end_ms - c.idle_timeout_ms))
                    self._heard_from = (self._clock(), end_ms)
                    item_id = "item_" + secrets.token_hex(10)
                    self._emit(IdleTimeoutEvent(item_id, start_ms, end_ms))
                    self._emit(CommittedEvent(item_id, None))
                    conv.audio_committed(item_id)
                    conv.create_response()
                    continue
                wait = 0.25 if self.busy else min(wait, max(left, 0.05))
            await asyncio.sleep(wait)

    async def _digit_timer(self) -> None:
        """Calls the responder's `poll` at its digit-collection deadline (an IVR timeout)."""
        responder = self.responder
        if responder is None or self.conversation is None:
            return
        deadline_of, poll = responder.dtmf_deadline, responder.poll
        while True:
            self._timer_kick.clear()
            deadline = deadline_of()
            if deadline is None or self.conversation.speaking:
                await self._timer_kick.wait()
                continue
            wait = deadline - self._clock()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._timer_kick.wait()
                continue
            replies = poll(self._clock())
            if replies is not None:
                self.conversation.say_replies(list(replies))

    # --- config ----------------------------------------------------------------------------------

    def _sync_conversation(self) -> None:
        conv = self.conversation
        if conv is None:
            return
        c = self.config
        conv.rate = c.output_rate
        conv.voice = c.voice if c.voice in conv.pool.catalog else None
        conv.instructions = c.instructions
        conv.interrupt = c.interruptible
        conv.modalities = c.modalities
        conv.tools, conv.tool_choice, conv.tool_name = c.tools, c.tool_choice, c.tool_name
        conv.max_output_tokens = c.max_output_tokens

    def _stt_config(self) -> SttConfig:
        c = self.config
        return replace(self._stt_base, turn_detection=c.turn_detection, language=c.language or self._stt_base.language,
                       prompt=c.prompt, word_timestamps=c.word_timestamps, speaker_labels=c.speaker_labels)

