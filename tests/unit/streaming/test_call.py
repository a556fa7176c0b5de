"""Call with fakes (scripted STT, RMS VAD, tone TTS, recording port): turns, barge-in, DTMF, hang-up.

Real time is used, so replies are paced as in production; every test stays well under 3 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pytest

from kombain.streaming.call import (
    Call,
    CallConfig,
    CallError,
    CallEvent,
    CallHooks,
    DtmfEvent,
    HangupEvent,
)
from kombain.streaming.conversation import (
    ResponseAudio,
    ResponseFinished,
    ResponseStarted,
    ResponseText,
)
from kombain.streaming.endpointer import TurnDetection
from kombain.streaming.responders import (
    EchoResponder,
    IvrScript,
    Message,
    Reply,
    Responder,
    ResponseRequest,
    ScriptResponder,
)
from kombain.streaming.stt_events import (
    CommittedEvent,
    SpeechStartedEvent,
    SpeechStoppedEvent,
    TranscriptCompletedEvent,
    TranscriptDeltaEvent,
    VoiceOnsetCancelledEvent,
    VoiceOnsetEvent,
)
from kombain.streaming.transcriber import SttConfig
from tests.fakes.io import FakeAudioOutput
from tests.fakes.stt import FakeRuntime
from tests.fakes.tts import FakeVoicePool
from tests.fakes.vad import FakeVadModel

RATE = 16000
CHUNK_MS = 20
WORD_MS = 60  # the fake voice's length of one word
LONG = " ".join(f"word{i}" for i in range(1, 29))  # echoed as 30 words: 1.8 s of reply audio

E = TypeVar("E")


# --- audio -------------------------------------------------------------------------------------------------

def tone(ms: int, rate: int = RATE, amp: float = 0.3, freq: float = 440.0) -> np.ndarray:
    """A sine tone: "speech" to the fake VAD."""
    t = np.arange(rate * ms // 1000) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def silence(ms: int, rate: int = RATE) -> np.ndarray:
    """Digital silence."""
    return np.zeros(rate * ms // 1000, dtype=np.float32)


def turn(speech_ms: int = 300, silence_ms: int = 700, rate: int = RATE) -> np.ndarray:
    """A whole user turn: speech, then enough silence for the endpointer to end it (500 ms)."""
    return np.concatenate([tone(speech_ms, rate), silence(silence_ms, rate)])


# --- a responder that streams ------------------------------------------------------------------------------

class ClauseEcho(EchoResponder):
    """The echo, streamed five words at a time (as an LLM would): each clause is its own TTS chunk."""

    async def respond(self, request: ResponseRequest) -> AsyncIterator[Reply]:
        words = f"You said: {request.transcript.strip()}".split()
        for i in range(0, len(words), 5):
            yield Reply(("" if i == 0 else " ") + " ".join(words[i : i + 5]))


# --- harness -----------------------------------------------------------------------------------------------

@dataclass
class Harness:
    """A Call built from fakes, the events it emitted (with clock times) and its output port."""

    call: Call
    port: FakeAudioOutput
    runtime: FakeRuntime
    pool: FakeVoicePool
    timed: list[tuple[float, CallEvent]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    @property
    def events(self) -> list[CallEvent]:
        return [ev for _, ev in self.timed]

    def of(self, cls: type[E]) -> list[E]:
        """Emitted events of one type, in order."""
        return [ev for ev in self.events if isinstance(ev, cls)]

    def at(self, ev: CallEvent) -> float:
        """Clock time an event was emitted."""
        return next(t for t, e in self.timed if e is ev)

    def kinds(self, *types: type) -> list[str]:
        """Names of the emitted events of these types, in order."""
        return [type(ev).__name__ for ev in self.events if isinstance(ev, types)]

    async def push(self, audio: np.ndarray, rate: int = RATE, realtime: bool = False) -> None:
        """Feed audio in 20 ms chunks: paced to real time, or as fast as the loop allows."""
        step = rate * CHUNK_MS // 1000
        for i in range(0, len(audio), step):
            self.call.push_audio(audio[i : i + step], rate)
            await asyncio.sleep(CHUNK_MS / 1000 if realtime else 0)

    async def until(self, pred: Callable[[], Any], within: float = 2.0, what: str = "condition") -> Any:
        """Poll `pred` until it is truthy; return its value."""
        deadline = time.monotonic() + within
        while not (value := pred()):
            if time.monotonic() > deadline:
                names = [type(e).__name__ for e in self.events]
                raise AssertionError(f"timed out waiting for {what}; events: {names}")
            await asyncio.sleep(0.005)
        return value

    async def event(self, cls: type[E], n: int = 1, pred: Callable[[E], bool] = lambda e: True,
                    within: float = 2.0) -> E:
        """Wait for the n-th emitted event of `cls` matching `pred`."""
        def nth() -> E | None:
            found = [e for e in self.of(cls) if pred(e)]
            return found[n - 1] if len(found) >= n else None
        return await self.until(nth, within, f"{cls.__name__} #{n}")  # type: ignore[no-any-return]

    async def finished(self, n: int = 1, within: float = 3.0) -> ResponseFinished:
        """Wait for the n-th ResponseFinished."""
        return await self.event(ResponseFinished, n, within=within)

    def start(self) -> None:
        self.task = asyncio.create_task(self.call.run())

    async def stop(self) -> None:
        """Close the call; cancel `run()` if it does not return by itself (see test_close_ends_run)."""
        self.call.close()
        if self.task is None:
            return
        await asyncio.wait({self.task}, timeout=0.2)
        if not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        else:
            self.task.result()  # surface a crash in the call


def build(config: CallConfig | None = None, *, script: Any = "hello there",
          responder: Responder | None = None, on_write: Callable[[ResponseAudio, int], None] | None = None,
          stt: SttConfig | None = None, **kw: Any) -> Harness:
    """A Call as server/host.py builds one, from fakes (not started)."""
    runtime = FakeRuntime(script)
    pool = FakeVoicePool(word_ms=WORD_MS)
    port = FakeAudioOutput(on_write=on_write)
    timed: list[tuple[float, CallEvent]] = []

    def emit(ev: CallEvent) -> None:
        timed.append((time.monotonic(), ev))

    call = Call(runtime, FakeVadModel(), config or CallConfig(), emit,
                stt=stt or SttConfig(), output=port, tts=pool,
                responder=EchoResponder() if responder is None else responder, **kw)
    return Harness(call, port, runtime, pool, timed)


@contextlib.asynccontextmanager
async def running(config: CallConfig | None = None, **kw: Any) -> AsyncIterator[Harness]:
    """A started Call from fakes; closed on exit."""
    h = build(config, **kw)
    h.start()
    await asyncio.sleep(0.01)
    try:
        yield h
    finally:
        await h.stop()


async def long_reply(h: Harness, frames: int = 7) -> ResponseStarted:
    """Have the call speak a 1.8 s reply (an echo of LONG) and wait until `frames` chunks are out."""
    await h.push(turn())
    started = await h.event(ResponseStarted)
    await h.until(lambda: len(h.port.writes) >= frames, what=f"{frames} audio chunks")
    return started


# --- 1. a turn and its reply -------------------------------------------------------------------------------

async def test_turn_gets_transcript_and_echo_reply_on_the_port() -> None:
    async with running() as h:
        await h.push(turn())
        fin = await h.finished()

        assert h.kinds(SpeechStartedEvent, SpeechStoppedEvent, CommittedEvent, TranscriptCompletedEvent) == [
            "SpeechStartedEvent", "SpeechStoppedEvent", "CommittedEvent", "TranscriptCompletedEvent"]
        (done,) = h.of(TranscriptCompletedEvent)
        assert done.transcript == "hello there"
        assert h.kinds(ResponseStarted, ResponseText, ResponseFinished) == [
            "ResponseStarted", "ResponseText", "ResponseFinished"]
        assert [t.text for t in h.of(ResponseText)] == ["You said: hello there"]
        assert fin.status == "completed" and fin.reason is None and not fin.hangup
        assert fin.transcript == "You said: hello there"
        # Audio goes to the port only, never to emit; voice onsets stay inside the call.
        assert not h.of(ResponseAudio) and not h.of(VoiceOnsetEvent)
        writes = h.port.writes
        assert writes and {w.response_id for w in writes} == {fin.response_id}
        assert {c.rate for c in h.port.calls} == {24000}
        assert h.port.audio_ms() == 4 * WORD_MS == fin.audio_sent_ms == fin.audio_heard_ms
        assert writes[-1].end_ms == fin.audio_sent_ms
        assert h.port.ops() == []  # nothing held or cleared
        assert h.call.conversation is not None
        assert h.call.conversation.history == [Message("user", "hello there"),
                                               Message("assistant", "You said: hello there")]


# --- 2. barge-in -------------------------------------------------------------------------------------------

def heard_words(fin: ResponseFinished) -> list[str]:
    """What the caller heard of a cancelled echo of LONG, by the fake voice's 60 ms a word."""
    return f"You said: {LONG}".split()[: fin.audio_heard_ms // WORD_MS]


async def test_speech_during_reply_holds_then_clears_and_keeps_what_was_heard() -> None:
    async with running(script=LONG, responder=ClauseEcho()) as h:
        started = await long_reply(h)
        await asyncio.sleep(0.25)
        await h.push(tone(300))  # the caller talks over the reply
        fin = await h.finished()

        assert fin.response_id == started.response_id
        assert fin.status == "cancelled" and fin.reason == "turn_detected"
        assert h.port.ops() == [("hold", True), ("clear", None), ("hold", False)]
        hold_at = next(c.at for c in h.port.calls if c.op == "hold")
        assert all(c.at <= hold_at for c in h.port.calls if c.op == "write")  # nothing written while held
        # ~0.35 s of the reply had played (the playhead runs from the first write) when the caller cut in.
        first_write = h.port.calls[0].at
        assert abs(fin.audio_heard_ms - (h.at(fin) - first_write) * 1000) < 80
        assert fin.audio_heard_ms + 300 < fin.audio_sent_ms < 30 * WORD_MS
        heard = heard_words(fin)
        assert 3 <= len(heard) < 10 and fin.transcript == " ".join(heard)
        assert "barge_in" in fin.timings_ms
        assert h.call.conversation is not None
        assert h.call.conversation.history == [Message("user", LONG), Message("assistant", fin.transcript)]


async def test_cancel_keeps_heard_words_of_the_clause_being_played() -> None:
    async with running(script=LONG) as h:  # the plain echo: one 1.8 s clause
        await long_reply(h)
        await asyncio.sleep(0.3)
        assert h.call.cancel()
        fin = await h.finished()
        assert fin.audio_heard_ms >= 300
        assert fin.transcript == " ".join(heard_words(fin))
        assert h.call.conversation is not None
        assert h.call.conversation.history[-1] == Message("assistant", fin.transcript)


# --- 3. a blip ---------------------------------------------------------------------------------------------

async def test_blip_during_reply_holds_then_resumes_and_reply_completes() -> None:
    async with running(script=LONG) as h:
        started = await long_reply(h)
        await h.push(np.concatenate([tone(40), silence(100)]), realtime=True)  # at most 3 voiced frames
        assert h.port.ops() == [("hold", True), ("hold", False)]
        fin = await h.finished()

        assert fin.response_id == started.response_id
        assert fin.status == "completed"
        assert fin.transcript == f"You said: {LONG}"
        assert h.port.ops() == [("hold", True), ("hold", False)]
        assert h.port.audio_ms() == fin.audio_sent_ms == 30 * WORD_MS
        assert not h.of(SpeechStartedEvent)[1:]  # the blip never became a turn


async def test_short_sound_resumes_the_reply_after_a_short_silence_not_at_the_turn_end() -> None:
    """With interruption minimums, a short sound holds the reply; once the caller is silent again
    the reply goes on, even while the turn stays open (semantic_vad can keep it open for seconds)."""
    async with running(CallConfig(interrupt_min_speech_ms=600), script=LONG) as h:
        started = await long_reply(h)
        h.call.update(CallConfig(interrupt_min_speech_ms=600, turn_detection=TurnDetection(silence_ms=1500)))
        await h.push(np.concatenate([tone(250), silence(600)]), realtime=True)
        assert h.port.ops() == [("hold", True), ("hold", False)]  # resumed within the 600 ms of silence
        assert not h.of(SpeechStoppedEvent)[1:]  # the caller's turn has not ended yet
        await h.push(silence(1200), realtime=True)
        fin = await h.finished()
        assert fin.response_id == started.response_id and fin.status == "completed"
        assert h.port.ops() == [("hold", True), ("hold", False)]


# --- 4. playback reports -----------------------------------------------------------------------------------

@pytest.mark.parametrize("lag_ms", [0, 300])
async def test_heard_ms_of_cancelled_reply_follows_playback_reports(lag_ms: int) -> None:
    """The port reports a playhead `lag_ms` behind the pacing estimate with each chunk (0: no reports)."""
    writes: list[float] = []
    holder: list[Call] = []

    def report(audio: ResponseAudio, rate: int) -> None:
        writes.append(time.monotonic())
        if lag_ms:
            holder[0].playback(audio.response_id, max(0, round((writes[-1] - writes[0]) * 1000) - lag_ms))

    h = build(script=LONG, responder=ClauseEcho(), on_write=report)
    holder.append(h.call)
    h.start()
    try:
        await h.push(turn())
        await h.event(ResponseStarted)
        await asyncio.sleep(0.8)
        assert h.call.cancel()
        fin = await h.finished()
    finally:
        await h.stop()

    assert fin.status == "cancelled" and fin.reason == "client_cancelled"
    estimate = (h.at(fin) - writes[0]) * 1000  # pacing's playhead runs from the first write
    assert fin.audio_sent_ms > estimate + 300
    assert abs(fin.audio_heard_ms - (estimate - lag_ms)) < 60
    assert fin.transcript == " ".join(heard_words(fin))
    assert h.call.conversation is not None
    assert h.call.conversation.history[-1] == Message("assistant", fin.transcript)


# --- 5. not interruptible ----------------------------------------------------------------------------------

async def test_speech_does_not_cancel_when_not_interruptible() -> None:
    async with running(CallConfig(interruptible=False), script=LONG) as h:
        started = await long_reply(h)
        await h.push(tone(300))
        assert len(h.of(SpeechStartedEvent)) == 2  # the caller's speech is still heard
        fin = await h.finished()

        assert fin.response_id == started.response_id
        assert fin.status == "completed" and fin.transcript == f"You said: {LONG}"
        assert h.port.ops() == []


# --- 6. DTMF -----------------------------------------------------------------------------------------------

async def test_dtmf_echo_reply_cuts_off_reply_in_progress() -> None:
    async with running() as h:
        first = h.call.respond(say=f"You said: {LONG}")
        await h.until(lambda: len(h.port.writes) >= 7, what="audio")
        h.call.push_dtmf("5")
        (key,) = h.of(DtmfEvent)
        assert key.digit == "5"
        second = await h.finished(2)

        cut = h.of(ResponseFinished)[0]
        assert cut.response_id == first and cut.status == "cancelled" and cut.reason == "superseded"
        assert second.status == "completed" and second.transcript == "You pressed 5."
        assert [t.text for t in h.of(ResponseText)] == [f"You said: {LONG}", "You pressed 5."]
        assert h.kinds(DtmfEvent, ResponseStarted, ResponseFinished) == [
            "ResponseStarted", "DtmfEvent", "ResponseFinished", "ResponseStarted", "ResponseFinished"]
        assert h.port.ops() == [("clear", None)]
        assert h.port.audio_ms(second.response_id) == 3 * WORD_MS

        for bad in ("x", "55", "", "a"):
            with pytest.raises(CallError) as err:
                h.call.push_dtmf(bad)
            assert err.value.code == "invalid_dtmf"
        assert len(h.of(DtmfEvent)) == 1


# --- 7. IVR digit timeout ----------------------------------------------------------------------------------

PROMPT = " ".join(["Please enter your account number now."] * 3)  # 18 words: 1.08 s of audio
IVR = {
    "start": "ask",
    "nodes": {
        "ask": {"say": PROMPT, "collect": {"digits": 4, "timeout_s": 0.5, "goto": "thanks",
                                           "timeout_goto": "slow"}},
        "thanks": {"say": "Thanks.", "hangup": True},
        "slow": {"say": "No input received.", "hangup": True},
    },
}


async def test_ivr_collect_timeout_counts_from_prompt_end_and_speaks_timeout_prompt() -> None:
    async with running(responder=ScriptResponder(IvrScript.from_dict(IVR))) as h:
        prompt = await h.finished()
        slow = await h.finished(2)

        assert prompt.status == "completed" and prompt.transcript == PROMPT
        assert slow.status == "completed" and slow.transcript == "No input received." and slow.hangup
        (second,) = h.of(ResponseStarted)[1:]
        # The timeout (0.5 s) counts from when the caller has heard the prompt, up to lead_s (0.5 s)
        # after its last chunk was sent.
        assert h.at(second) - h.at(prompt) >= 0.5 - 0.02
        assert h.at(second) - h.at(prompt) < 0.5 + 0.6 + 0.3
        assert h.of(HangupEvent) == [HangupEvent("hangup")]
        assert h.call.hangup_reason == "hangup"


async def test_ivr_collect_timeout_counts_from_when_the_prompt_was_heard() -> None:
    async with running(responder=ScriptResponder(IvrScript.from_dict(IVR))) as h:
        await h.finished()
        await h.event(ResponseStarted, 2)
        prompt_id = h.of(ResponseStarted)[0].response_id
        heard_end = h.port.calls[0].at + h.port.audio_ms(prompt_id) / 1000  # the playhead at 1x
        assert h.at(h.of(ResponseStarted)[1]) - heard_end >= 0.5 - 0.05


# --- 8. ending the call ------------------------------------------------------------------------------------

async def test_end_speaks_goodbye_then_hangs_up() -> None:
    async with running() as h:
        h.call.end("server_shutting_down", goodbye="Bye.")
        fin = await h.finished()
        await h.event(HangupEvent)

        assert fin.status == "completed" and fin.transcript == "Bye." and fin.hangup
        assert h.kinds(ResponseStarted, ResponseText, ResponseFinished, HangupEvent) == [
            "ResponseStarted", "ResponseText", "ResponseFinished", "HangupEvent"]
        assert h.of(HangupEvent) == [HangupEvent("server_shutting_down")]
        assert h.port.audio_ms(fin.response_id) == WORD_MS


async def test_goodbye_is_not_interrupted_by_speech() -> None:
    goodbye = " ".join(["Sorry, this service is restarting."] * 4) + " Goodbye."
    async with running(script=LONG) as h:
        h.call.end("server_shutting_down", goodbye=goodbye)
        await h.until(lambda: len(h.port.writes) >= 7, what="goodbye audio")
        await h.push(tone(300))  # the caller talks over it
        fin = await h.finished()
        await h.event(HangupEvent)

        assert fin.status == "completed" and fin.transcript == goodbye and fin.hangup
        assert h.port.ops() == []
        assert h.of(HangupEvent) == [HangupEvent("server_shutting_down")]


async def test_goodbye_is_not_cut_off_by_a_user_turn() -> None:
    goodbye = " ".join(["Sorry, this service is restarting."] * 4) + " Goodbye."
    async with running() as h:
        h.call.end("server_shutting_down", goodbye=goodbye)
        await h.until(lambda: len(h.port.writes) >= 7, what="goodbye audio")
        await h.push(turn(300, 600))  # a whole turn while the goodbye plays
        fin = await h.finished()
        assert fin.status == "completed" and fin.transcript == goodbye
        await h.event(HangupEvent, within=1.0)


async def test_goodbye_is_not_cut_off_by_a_key_press() -> None:
    goodbye = " ".join(["Sorry, this service is restarting."] * 4) + " Goodbye."
    async with running() as h:
        h.call.end("server_shutting_down", goodbye=goodbye)
        await h.until(lambda: len(h.port.writes) >= 7, what="goodbye audio")
        h.call.push_dtmf("1")
        fin = await h.finished()
        assert fin.status == "completed" and fin.transcript == goodbye
        await h.event(HangupEvent, within=1.0)


async def test_end_without_goodbye_hangs_up_at_once() -> None:
    async with running() as h:
        h.call.end("session_expired")
        assert h.of(HangupEvent) == [HangupEvent("session_expired")]
        assert not h.of(ResponseStarted)


# --- 9. early audio ----------------------------------------------------------------------------------------

async def test_audio_pushed_before_run_is_kept_and_fed_8khz() -> None:
    h = build()
    audio = turn(rate=8000)
    for i in range(0, len(audio), 160):  # one second of 8 kHz audio in 20 ms chunks, before run()
        h.call.push_audio(audio[i : i + 160], 8000)
    assert not h.events
    h.start()
    try:
        fin = await h.finished()
    finally:
        await h.stop()
    assert h.kinds(SpeechStartedEvent, SpeechStoppedEvent, TranscriptCompletedEvent) == [
        "SpeechStartedEvent", "SpeechStoppedEvent", "TranscriptCompletedEvent"]
    assert h.of(TranscriptCompletedEvent)[0].transcript == "hello there"
    assert fin.status == "completed" and fin.transcript == "You said: hello there"


# --- 10. transcription only --------------------------------------------------------------------------------

async def test_transcription_only_call_never_speaks() -> None:
    async with running(CallConfig(conversation=False)) as h:
        assert h.call.conversation is None and not h.call.speaks
        await h.push(turn())
        done = await h.event(TranscriptCompletedEvent)
        await asyncio.sleep(0.05)

        assert done.transcript == "hello there"
        with pytest.raises(CallError) as err:
            h.call.respond(say="hi")
        assert err.value.code == "responses_unavailable"
        assert not h.call.cancel()
        h.call.push_dtmf("1")  # still reported, never answered
        assert h.of(DtmfEvent)[0].digit == "1"
        assert not h.of(ResponseStarted) and not h.port.calls


# --- more of the Call contract -----------------------------------------------------------------------------

async def test_respond_says_text_verbatim_and_cancel_reports() -> None:
    async with running() as h:
        rid = h.call.respond(say="Hi there.")
        fin = await h.finished()
        assert fin.response_id == rid and fin.transcript == "Hi there." and fin.status == "completed"
        assert not h.call.cancel()  # nothing to cancel now


async def test_update_turns_barge_in_off() -> None:
    async with running(script=LONG) as h:
        h.call.update(CallConfig(interruptible=False, turn_detection=TurnDetection(silence_ms=800)))
        await h.push(turn(300, 900))
        await h.event(ResponseStarted)
        await h.until(lambda: len(h.port.writes) >= 7, what="audio")
        await h.push(tone(300))
        fin = await h.finished()
        assert fin.status == "completed" and h.port.ops() == []


async def test_voice_onset_events_are_not_emitted() -> None:
    async with running() as h:
        await h.push(np.concatenate([tone(40), silence(200)]))
        await asyncio.sleep(0.02)
        assert not h.of(VoiceOnsetEvent) and not h.of(VoiceOnsetCancelledEvent)
        assert not h.of(SpeechStartedEvent)


async def test_close_ends_run() -> None:
    h = build()
    h.start()
    await asyncio.sleep(0.01)
    h.call.close()
    assert h.task is not None
    done, _ = await asyncio.wait({h.task}, timeout=0.5)
    if not done:
        h.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await h.task
    assert done


@pytest.mark.parametrize("idle_ms", [0, 200])
async def test_partials_come_sooner_while_the_decoder_is_idle(idle_ms: int) -> None:
    """With `idle_partial_interval_ms`, an idle decoder takes a partial every 200 ms of new speech
    instead of every 400 ms (so two partials agree, and words show, sooner)."""
    async with running(stt=SttConfig(idle_partial_interval_ms=idle_ms)) as h:
        await h.push(tone(1600))
        await h.push(silence(700))
        await h.event(TranscriptCompletedEvent)
        sizes = [c.samples for c in h.runtime.calls if c.kind == "partial"]
        steps = {b - a for a, b in zip(sizes, sizes[1:], strict=False)}
        assert len(sizes) >= 3 and steps == {(idle_ms or 400) * 16}, sizes  # 16 kHz samples


async def test_the_speculative_decode_shows_words_before_the_turn_ends() -> None:
    """One partial ("four queen") is not enough to agree on; the decode launched at the pause
    ("four queen of clubs") agrees with it, and those words show before the silence wait ends."""
    async with running(script=lambda audio, kind: "four queen" if kind == "partial" else "four queen of clubs") as h:
        await h.push(tone(500))
        await h.push(silence(700))
        done = await h.event(TranscriptCompletedEvent)
        assert len([c for c in h.runtime.calls if c.kind == "partial"]) == 1
        deltas = h.of(TranscriptDeltaEvent)
        assert [d.delta for d in deltas] == ["four queen"]
        assert h.at(deltas[0]) < h.at(h.of(SpeechStoppedEvent)[0])
        assert done.transcript == "four queen of clubs"


async def test_the_final_keeps_a_number_as_it_was_shown() -> None:
    async with running(script=lambda audio, kind: "4 queen" if kind == "partial" else "Four queen of clubs.") as h:
        await h.push(tone(1000))
        await h.push(silence(700))
        done = await h.event(TranscriptCompletedEvent)
        assert " ".join(d.delta for d in h.of(TranscriptDeltaEvent)) == "4 queen"
        assert done.transcript == "4 queen of clubs."


async def test_a_partial_back_after_its_turn_ended_is_counted_late() -> None:
    late: list[int] = []
    h = build(hooks=CallHooks(partial_late=lambda: late.append(1)))
    h.runtime.delay_s = 0.3
    h.start()
    try:
        await h.push(tone(450))  # a partial is launched at 400 ms and takes 300 ms
        await h.push(silence(700))  # unpaced: the turn ends while it decodes
        await h.event(TranscriptCompletedEvent)
        await h.until(lambda: late, what="a late partial")
        assert not h.of(TranscriptDeltaEvent)
    finally:
        await h.stop()


async def test_no_words_are_published_when_partials_are_off() -> None:
    """Two pauses, two speculative decodes that agree: with partials off, still no delta."""
    async with running(stt=SttConfig(partials=False)) as h:
        await h.push(np.concatenate([tone(400), silence(300), tone(400)]), realtime=True)
        await h.push(silence(700))
        await h.event(TranscriptCompletedEvent)
        assert sum(c.kind == "final" for c in h.runtime.calls) >= 2  # the first pause was decoded too
        assert not h.of(TranscriptDeltaEvent)
