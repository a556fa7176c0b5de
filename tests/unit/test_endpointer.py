"""streaming.endpointer: the end-of-turn state machine driven by synthetic VAD probabilities."""

from __future__ import annotations

import pytest

from kombain.streaming.endpointer import (
    Endpointer,
    SpeechPaused,
    SpeechStarted,
    SpeechStopped,
    TurnDetection,
    VoiceOnset,
    VoiceOnsetCancelled,
)

FRAME = 512  # samples per VAD frame at 16 kHz (32 ms)
RATE = 16000


class Feeder:
    """Feeds probabilities frame by frame and records (frame_index, event) pairs.

    Onset events (the tentative barge-in signal) are kept apart in `onsets`, so the turn events
    can be compared exactly."""

    def __init__(self, config: TurnDetection | None = None, **kw) -> None:
        self.ep = Endpointer(config or TurnDetection(), rate=RATE, **kw)
        self.frame = 0
        self.events: list[tuple[int, object]] = []
        self.onsets: list[tuple[int, object]] = []

    def feed(self, *probs: float) -> list:
        out = []
        for p in probs:
            self.frame += 1
            evs = []
            for e in self.ep.feed(p, self.frame * FRAME, FRAME):
                if isinstance(e, VoiceOnset | VoiceOnsetCancelled):
                    self.onsets.append((self.frame, e))
                else:
                    evs.append(e)
            out.extend(evs)
            self.events.extend((self.frame, e) for e in evs)
        return out

    def of(self, cls: type) -> list[tuple[int, object]]:
        return [(i, e) for i, e in self.events if isinstance(e, cls)]


def test_speech_started_after_min_speech_ms_with_run_first_sample() -> None:
    f = Feeder(TurnDetection(min_speech_ms=100))
    f.feed(0.0, 0.0)  # frames 1-2 silent: the run starts at frame 3, sample 2 * 512
    # 100 ms = 1600 samples: 3 frames (1536) are not enough, the 4th (2048) is.
    assert f.feed(0.9, 0.9, 0.9) == []
    assert f.ep.in_speech is False
    assert f.feed(0.9) == [SpeechStarted(2 * FRAME)]
    assert f.ep.in_speech is True
    # No second start while the speech goes on.
    assert f.feed(0.9, 0.9, 0.9) == []


def test_min_speech_ms_zero_starts_on_first_voiced_frame() -> None:
    f = Feeder(TurnDetection(min_speech_ms=0))
    assert f.feed(0.0) == []
    assert f.feed(0.8) == [SpeechStarted(FRAME)]


def test_single_frame_blip_does_not_start_speech() -> None:
    f = Feeder(TurnDetection(min_speech_ms=100))
    for _ in range(5):
        assert f.feed(0.95, 0.0, 0.0) == []
    assert f.ep.in_speech is False
    assert f.events == []


def test_interrupted_run_restarts_counting() -> None:
    f = Feeder(TurnDetection(min_speech_ms=100))
    f.feed(0.9, 0.9, 0.9, 0.0)  # 3 voiced frames, then silence resets the run
    assert f.events == []
    f.feed(0.9, 0.9, 0.9)
    assert f.events == []
    evs = f.feed(0.9)
    assert evs == [SpeechStarted(4 * FRAME)]  # the second run's first sample


def _start_speech(f: Feeder, frames: int = 10) -> int:
    """Voiced frames until speech has started; returns the end sample of the last voiced frame."""
    f.feed(*([0.9] * frames))
    assert f.ep.in_speech
    return f.frame * FRAME


def test_speech_paused_after_about_160ms_of_silence() -> None:
    f = Feeder()
    last_voiced_end = _start_speech(f)
    # 160 ms = 2560 samples = exactly 5 frames of silence.
    assert f.feed(0.0, 0.0, 0.0, 0.0) == []
    assert f.feed(0.0) == [SpeechPaused(last_voiced_end)]
    # Reported once, not on every further silent frame.
    assert f.feed(0.0, 0.0) == []
    assert len(f.of(SpeechPaused)) == 1
    assert f.ep.in_speech is True


def test_pause_reported_again_after_speech_resumes() -> None:
    f = Feeder()
    _start_speech(f)
    f.feed(*([0.0] * 5))
    assert len(f.of(SpeechPaused)) == 1
    end2 = _start_speech(f, 2)
    f.feed(*([0.0] * 5))
    pauses = f.of(SpeechPaused)
    assert len(pauses) == 2
    assert pauses[1][1] == SpeechPaused(end2)
    assert f.of(SpeechStopped) == []


def test_speech_stopped_after_default_silence_ms() -> None:
    f = Feeder()
    assert f.ep.config.silence_ms == 500
    last_voiced_end = _start_speech(f)
    # 500 ms = 8000 samples: 15 silent frames (7680) are not enough, the 16th (8192) is.
    f.feed(*([0.0] * 15))
    assert f.of(SpeechStopped) == []
    assert f.ep.in_speech is True
    assert f.feed(0.0) == [SpeechStopped(last_voiced_end)]
    assert f.ep.in_speech is False
    # Stays stopped through more silence.
    assert f.feed(0.0, 0.0, 0.0) == []


def test_speech_stopped_custom_silence_and_end_sample_is_last_voiced_frame() -> None:
    f = Feeder(TurnDetection(silence_ms=200))
    f.feed(0.0, 0.0)
    f.feed(0.9, 0.9, 0.9, 0.9, 0.9)  # frames 3..7; last voiced frame ends at 7 * 512
    # 200 ms = 3200 samples -> 7 frames (3584); the pause (min(160, 200) ms) comes at 5 frames.
    evs = []
    for _ in range(7):
        evs.extend(f.feed(0.0))
    assert evs == [SpeechPaused(7 * FRAME), SpeechStopped(7 * FRAME)]
    assert [i for i, _ in f.events[1:]] == [12, 14]


def test_new_turn_after_stop() -> None:
    f = Feeder()
    _start_speech(f)
    f.feed(*([0.0] * 16))
    assert len(f.of(SpeechStopped)) == 1
    first_voiced = f.frame
    f.feed(0.9, 0.9, 0.9, 0.9)
    starts = f.of(SpeechStarted)
    assert len(starts) == 2
    assert starts[1][1] == SpeechStarted(first_voiced * FRAME)


def test_hysteresis_keeps_voiced_state_between_thresholds() -> None:
    # threshold 0.5: voiced >= 0.5, silent < 0.35, in between keeps the previous state.
    f = Feeder(TurnDetection(threshold=0.5, silence_ms=200))
    f.feed(0.9)
    # 0.4 continues the voiced run: start confirmed after 4 frames in total.
    assert f.feed(0.4, 0.4) == []
    assert f.feed(0.4) == [SpeechStarted(0)]
    # Wavering in the band never counts as silence, however long.
    f.feed(*([0.36] * 30))
    assert f.of(SpeechStopped) == [] and f.of(SpeechPaused) == []
    assert f.ep.last_voiced_end == f.frame * FRAME
    # Below 0.35 is silence.
    f.feed(*([0.34] * 7))
    assert [type(e) for _, e in f.events[1:]] == [SpeechPaused, SpeechStopped]


def test_hysteresis_keeps_silent_state_between_thresholds() -> None:
    f = Feeder(TurnDetection(threshold=0.5))
    f.feed(0.0)
    f.feed(*([0.45] * 20))  # in the band after silence: stays silent, never starts
    assert f.events == []
    assert f.ep.in_speech is False
    # Band values after speech has gone silent do not revive it.
    _start_speech(f)
    f.feed(*([0.0] * 3), *([0.45] * 13))
    assert len(f.of(SpeechStopped)) == 1


def test_reset_clears_state() -> None:
    f = Feeder()
    _start_speech(f)
    f.ep.reset()
    assert f.ep.in_speech is False
    assert f.ep.last_voiced_end == 0
    assert f.feed(0.0, 0.0, 0.0, 0.0, 0.0, 0.0) == []


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.1, 1.5])
def test_turn_detection_rejects_bad_threshold(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        TurnDetection(threshold=threshold)


@pytest.mark.parametrize("silence_ms", [-1, 10_001])
def test_turn_detection_rejects_bad_silence(silence_ms: int) -> None:
    with pytest.raises(ValueError, match="silence_duration_ms"):
        TurnDetection(silence_ms=silence_ms)


@pytest.mark.parametrize("padding", [-1, 5_001])
def test_turn_detection_rejects_bad_prefix_padding(padding: int) -> None:
    with pytest.raises(ValueError, match="prefix_padding_ms"):
        TurnDetection(prefix_padding_ms=padding)


def test_turn_detection_accepts_bounds() -> None:
    td = TurnDetection(threshold=0.01, silence_ms=10_000, prefix_padding_ms=5_000)
    assert (td.threshold, td.silence_ms, td.prefix_padding_ms) == (0.01, 10_000, 5_000)
    assert TurnDetection(silence_ms=0, prefix_padding_ms=0).silence_ms == 0
    d = TurnDetection()
    assert (d.threshold, d.silence_ms, d.prefix_padding_ms, d.min_speech_ms) == (0.5, 500, 300, 100)


def test_voice_onset_on_first_voiced_frame_and_cancelled_by_a_blip() -> None:
    f = Feeder(TurnDetection(min_speech_ms=100))
    f.feed(0.0, 0.95, 0.0)
    assert f.onsets == [(2, VoiceOnset(FRAME)), (3, VoiceOnsetCancelled())]
    f.feed(0.9, 0.9, 0.9, 0.9)  # a real start: onset, then SpeechStarted, no cancel
    assert f.onsets[2:] == [(4, VoiceOnset(3 * FRAME))]
    assert f.of(SpeechStarted) == [(7, SpeechStarted(3 * FRAME))]
    f.feed(0.9, 0.0, 0.9)  # inside a turn: no onsets
    assert len(f.onsets) == 3
