"""semantic_vad's schedule: the verdict at the pause is used at once (not held for the transcript),
an unfinished verdict waits in steps up to the schedule's cap, phone audio has its own schedule, and
a node without the turn model falls back to silence. Fakes for Whisper and the VAD; the scripted
turn model runs on the predictor's thread as the real one does."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from kombain.streaming import end_of_turn
from kombain.streaming.end_of_turn import TurnPredictor, TurnSchedule, schedule_for
from kombain.streaming.endpointer import TurnDetection
from kombain.streaming.stt_events import CommittedEvent, SpeechStoppedEvent, SttEvent
from kombain.streaming.transcriber import StreamingTranscriber, SttConfig
from tests.fakes.stt import FakeRuntime
from tests.fakes.vad import FakeVadStream

RATE = 16000


def test_the_schedule_steps_up_to_its_cap() -> None:
    s = TurnSchedule(first_ms=160, alone=0.95, with_words=0.3, step_ms=240, cap_ms=1000)
    assert list(s.checks()) == [160, 400, 640, 880]
    assert s.threshold(have_words=False) == 0.95 and s.threshold(have_words=True) == 0.3
    assert s.next_check(880) == 1000 and s.next_check(400) == 640


def test_schedules_per_eagerness_and_audio() -> None:
    assert schedule_for("auto") == schedule_for("medium")
    assert schedule_for("medium", narrowband=True) is end_of_turn.SCHEDULES[("medium", "phone")]
    assert schedule_for("unknown") is end_of_turn.SCHEDULES[("medium", "wideband")]
    for (eagerness, _), s in end_of_turn.SCHEDULES.items():  # never past OpenAI's documented wait
        assert s.cap_ms <= {"low": 8000, "medium": 4000, "high": 2000}[eagerness]
        assert s.cap_ms == TurnDetection.semantic_vad(eagerness).silence_ms  # the endpointer ends it there too
        assert 0 < s.with_words <= s.alone < 1


class ScriptedTurnModel:
    def __init__(self, *ps: float) -> None:
        self.ps = list(ps)
        self.calls = 0

    def predict(self, audio16k: np.ndarray) -> float:
        self.calls += 1
        return self.ps.pop(0) if len(self.ps) > 1 else self.ps[0]


def tone(ms: int) -> np.ndarray:
    t = np.arange(RATE * ms // 1000) / RATE
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def silence(ms: int) -> np.ndarray:
    return np.zeros(RATE * ms // 1000, np.float32)


class Rig:
    def __init__(self, model: ScriptedTurnModel | None, runtime: FakeRuntime, eagerness: str = "auto") -> None:
        self.events: list[tuple[int, SttEvent]] = []  # (audio position ms when emitted, event)
        self.decoding_at_stop: int | None = None  # Whisper decodes running when the turn ended
        self.fallbacks = 0
        self.checks: list[float] = []  # complete probabilities the checks found
        self.runtime = runtime
        self.predictor = TurnPredictor(model) if model is not None else None
        self.stt = StreamingTranscriber(
            runtime, FakeVadStream(0.01),  # type: ignore[arg-type]
            SttConfig(turn_detection=TurnDetection.semantic_vad(eagerness)),
            self._emit,
            turn_predictor=self.predictor, on_semantic_fallback=self._fallback, on_turn_check=self.checks.append)

    def _emit(self, ev: SttEvent) -> None:
        self.events.append((self.stt.position_ms, ev))
        if isinstance(ev, SpeechStoppedEvent):
            self.decoding_at_stop = self.runtime.pending

    def _fallback(self) -> None:
        self.fallbacks += 1

    async def push(self, audio: np.ndarray, realtime: bool = False) -> None:
        """20 ms at a time, yielding between (or at the pace of a microphone: a decode takes wall time)."""
        for i in range(0, len(audio), 320):
            self.stt.push_audio(audio[i:i + 320])
            await asyncio.sleep(0.02 if realtime else 0)

    async def until(self, kind: type, count: int = 1) -> list[tuple[int, SttEvent]]:
        async with asyncio.timeout(10):
            while len(got := [(p, e) for p, e in self.events if isinstance(e, kind)]) < count:
                await asyncio.sleep(0.005)
        return got

    async def __aenter__(self) -> Rig:
        self.task = asyncio.create_task(self.stt.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stt.close()
        await asyncio.wait_for(self.task, 10)
        if self.predictor is not None:
            self.predictor.close()


async def test_a_near_certain_verdict_ends_the_turn_without_waiting_for_the_transcript() -> None:
    model = ScriptedTurnModel(0.995)
    # The speculative decode (started at the same pause) takes 0.8 s, as on a loaded machine; the
    # check used to wait for it (up to 1 s) to read its last word.
    runtime = FakeRuntime("ten of clubs", delay_s=0.8)
    async with Rig(model, runtime) as rig:
        await rig.push(np.concatenate([silence(300), tone(600), silence(1000)]))
        await rig.until(SpeechStoppedEvent)
        assert model.calls == 1  # the first check, at the pause
        assert rig.decoding_at_stop >= 1  # the turn ended while a decode (0.8 s each) was still running


async def test_a_likely_verdict_waits_for_the_words_and_they_decide() -> None:
    """0.9: not enough alone (0.99), enough with words (0.3) unless they cannot end a sentence."""
    model = ScriptedTurnModel(0.9)
    async with Rig(model, FakeRuntime("ten of clubs", delay_s=0.1)) as rig:
        await rig.push(np.concatenate([silence(300), tone(600), silence(1000)]), realtime=True)
        await rig.until(SpeechStoppedEvent)
        assert rig.decoding_at_stop == 0  # ended once the words were there (they refine the last verdict)
        assert 0.9 in rig.checks and max(rig.checks) == 0.9  # "clubs" can end a sentence: 0.9 stands
    model = ScriptedTurnModel(0.9)
    async with Rig(model, FakeRuntime("and you always want to", delay_s=0.1)) as rig:
        await rig.push(np.concatenate([silence(300), tone(600), silence(2300)]), realtime=True)
        (_, stopped), = await rig.until(SpeechStoppedEvent)
        assert model.calls >= 3 and set(rig.checks[1:]) == {0.1}  # "to" holds the turn open until the cap (1.2 s)
        assert isinstance(stopped, SpeechStoppedEvent) and 880 <= stopped.audio_end_ms <= 960


async def test_an_unfinished_verdict_waits_in_steps_then_the_cap_ends_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(end_of_turn.SCHEDULES, ("medium", "wideband"),
                        TurnSchedule(first_ms=160, alone=0.5, with_words=0.5, step_ms=200, cap_ms=700))
    model = ScriptedTurnModel(0.1)
    async with Rig(model, FakeRuntime("and you always want to")) as rig:
        # At a microphone's pace: the checks follow the silence as it arrives (a verdict that comes
        # after the cap's silence does not get more checks queued behind it).
        await rig.push(np.concatenate([silence(300), tone(600), silence(1500)]), realtime=True)
        (pos, stopped), = await rig.until(SpeechStoppedEvent)
        assert model.calls == 3  # at 160, 360 and 560 ms of silence; at 700 the cap ends the turn
        assert isinstance(stopped, SpeechStoppedEvent) and 850 <= stopped.audio_end_ms <= 950


async def test_speech_that_resumes_inside_the_wait_keeps_the_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(end_of_turn.SCHEDULES, ("medium", "wideband"),
                        TurnSchedule(first_ms=160, alone=0.5, with_words=0.5, step_ms=200, cap_ms=700))
    model = ScriptedTurnModel(0.1)
    async with Rig(model, FakeRuntime("and you always want to see it")) as rig:
        await rig.push(np.concatenate([silence(300), tone(600), silence(500), tone(600), silence(1500)]))
        await rig.until(SpeechStoppedEvent)
        await asyncio.sleep(0.05)
        assert len([e for _, e in rig.events if isinstance(e, CommittedEvent)]) == 1


async def test_phone_audio_uses_the_phone_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(end_of_turn.SCHEDULES, ("medium", "phone"),
                        TurnSchedule(first_ms=160, alone=0.95, with_words=0.95, step_ms=200, cap_ms=700))
    model = ScriptedTurnModel(0.9)  # complete on the wideband schedule, not on this phone one
    async with Rig(model, FakeRuntime("ten of clubs")) as rig:
        rig.stt.narrowband = True
        await rig.push(np.concatenate([silence(300), tone(600), silence(1500)]), realtime=True)
        await rig.until(SpeechStoppedEvent)
        assert model.calls == 3


async def test_no_turn_model_falls_back_to_silence() -> None:
    async with Rig(None, FakeRuntime("ten of clubs")) as rig:
        assert rig.fallbacks == 1
        await rig.push(np.concatenate([silence(300), tone(600), silence(600)]))
        await rig.until(SpeechStoppedEvent)  # server_vad's 500 ms, not semantic_vad's 4 s


async def test_a_call_fed_8khz_audio_is_on_the_phone_schedule() -> None:
    from kombain.streaming.call import Call, CallConfig
    from kombain.streaming.responders import EchoResponder
    from tests.fakes.io import FakeAudioOutput
    from tests.fakes.tts import FakeVoicePool
    from tests.fakes.vad import FakeVadModel

    call = Call(FakeRuntime("hello"), FakeVadModel(), CallConfig(), lambda ev: None,  # type: ignore[arg-type]
                stt=SttConfig(), output=FakeAudioOutput(), tts=FakeVoicePool(), responder=EchoResponder())
    task = asyncio.create_task(call.run())
    try:
        await asyncio.sleep(0.01)
        call.push_audio(np.zeros(160, np.float32), 8000)  # G.711 from a phone line, decoded
        assert call.transcriber.narrowband
        call.push_audio(np.zeros(480, np.float32), 24000)  # a WebSocket client
        assert not call.transcriber.narrowband
    finally:
        call.close()
        await asyncio.wait_for(task, 5)


class SlowTurnModel(ScriptedTurnModel):
    def __init__(self, p: float, delay_s: float) -> None:
        super().__init__(p)
        self.delay_s = delay_s

    def predict(self, audio16k: np.ndarray) -> float:
        import time

        time.sleep(self.delay_s)
        return super().predict(audio16k)


async def test_words_that_come_while_the_model_thinks_again_end_the_turn_at_once() -> None:
    """A slow model (0.5 s) says 0.9 at the pause: not enough alone. Its next check is running
    when the words come (0.7 s decode): they refine 0.9 at once, not after that check's verdict."""
    model = SlowTurnModel(0.9, delay_s=0.5)
    async with Rig(model, FakeRuntime("ten of clubs", delay_s=0.7)) as rig:
        await rig.push(np.concatenate([silence(300), tone(600), silence(1600)]), realtime=True)
        (pos, stopped), = await rig.until(SpeechStoppedEvent)
        assert isinstance(stopped, SpeechStoppedEvent)
        silence_ms = pos - stopped.audio_end_ms
        # Words at ~900 ms of silence (200 ms tail + 0.7 s); the second verdict would be ~1160 ms.
        assert silence_ms < 1080, silence_ms
        assert model.calls == 2 and rig.checks[-1] == 0.9
