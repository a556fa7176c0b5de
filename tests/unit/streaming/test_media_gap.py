"""Media that stops counts as silence: the silence owed when audio stops mid-turn (pure), and a
call whose caller stops sending mid-turn still gets its turn ended and answered (fakes)."""

from __future__ import annotations

import asyncio

import numpy as np

from kombain.streaming.media_gap import MediaGap


def test_silence_is_owed_once_the_audio_falls_behind_the_wall_clock() -> None:
    gap = MediaGap(gap_s=0.3)
    assert gap.owed(5.0) == 0.0  # no audio yet: nothing to be behind
    gap.audio(0.02, now=10.0)
    assert gap.owed(10.2) == 0.0  # within the allowance (jitter, bursts)
    assert abs(gap.owed(10.52) - 0.5) < 1e-9  # 0.52 s passed, 0.02 s came
    gap.audio(0.5, now=10.52)  # filled in
    assert gap.owed(10.6) == 0.0


def test_a_caller_ahead_of_real_time_is_owed_nothing() -> None:
    gap = MediaGap(gap_s=0.3)
    gap.audio(10.0, now=0.0)  # a file streamed fast
    assert gap.owed(9.5) == 0.0 and gap.owed(10.4) > 0.3


def test_gaps_between_turns_are_forgiven() -> None:
    gap = MediaGap(gap_s=0.3)
    gap.audio(1.0, now=0.0)
    gap.idle(60.0)  # a minute with nothing sent and no turn open
    gap.audio(0.1, now=60.1)  # the next turn starts
    assert gap.owed(60.2) == 0.0


async def test_a_caller_who_stops_sending_mid_turn_is_answered() -> None:
    from kombain.streaming.call import Call, CallConfig
    from kombain.streaming.responders import EchoResponder
    from kombain.streaming.stt_events import SpeechStoppedEvent, TranscriptCompletedEvent
    from kombain.streaming.transcriber import SttConfig
    from tests.fakes.io import FakeAudioOutput
    from tests.fakes.stt import FakeRuntime
    from tests.fakes.tts import FakeVoicePool
    from tests.fakes.vad import FakeVadModel

    events: list[object] = []
    call = Call(FakeRuntime("turn on the lights"), FakeVadModel(), CallConfig(), events.append,  # type: ignore[arg-type]
                stt=SttConfig(), output=FakeAudioOutput(), tts=FakeVoicePool(), responder=EchoResponder())
    task = asyncio.create_task(call.run())
    try:
        await call.started.wait()
        t = np.arange(16000 * 6 // 10) / 16000
        call.push_audio((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)  # 0.6 s of "speech"
        # ... and then nothing at all: no silence frames (DTX, silence suppression, a push-to-talk client)
        async with asyncio.timeout(10):
            while not any(isinstance(e, TranscriptCompletedEvent) for e in events):
                await asyncio.sleep(0.02)
        assert any(isinstance(e, SpeechStoppedEvent) for e in events)
    finally:
        call.close()
        await asyncio.wait_for(task, 5)
