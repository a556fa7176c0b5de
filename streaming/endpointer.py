"""End-of-turn detection: a pure state machine over per-frame VAD probabilities (no I/O, no clock)."""

from __future__ import annotations

from dataclasses import dataclass

# semantic_vad: the longest an unfinished-sounding turn is waited for. The endpointer ends the turn
# there on its own (however long the turn model takes); the values are semantic_vad's schedule caps,
# calibrated with `python -m kombain.loadtest turn_calibration` (OpenAI documents 8 / 4 / 2 s).
# The longest semantic_vad waits; 1.2 s for medium/high from the held-back and spontaneous speech
# (docs/performance.md, "Held-back and spontaneous speech"): no cut-in rate there changed, p95 fell.
EAGERNESS_MAX_MS = {"low": 4000, "medium": 1200, "high": 1200, "auto": 1200}


@dataclass(frozen=True, slots=True)
class TurnDetection:
    """Turn detection settings, per session (OpenAI's `turn_detection`).

    `server_vad`: a turn ends after `silence_ms` of silence. `semantic_vad`: after a short pause an
    end-of-turn model decides; a complete-sounding turn ends at once, an unfinished one waits up
    to the eagerness's maximum (then `silence_ms` is that maximum)."""

    threshold: float = 0.5
    silence_ms: int = 500
    prefix_padding_ms: int = 300
    min_speech_ms: int = 100
    type: str = "server_vad"  # server_vad | semantic_vad
    eagerness: str = "auto"  # semantic_vad: low | medium | high | auto

    @property
    def semantic(self) -> bool:
        return self.type == "semantic_vad"

    @classmethod
    def semantic_vad(cls, eagerness: str = "auto", **kw: float | int) -> TurnDetection:
        if eagerness not in EAGERNESS_MAX_MS:
            raise ValueError("turn_detection.eagerness must be low, medium, high or auto")
        return cls(type="semantic_vad", eagerness=eagerness, silence_ms=EAGERNESS_MAX_MS[eagerness], **kw)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if self.type not in ("server_vad", "semantic_vad"):
            raise ValueError("turn_detection.type must be server_vad or semantic_vad")
        if self.eagerness not in EAGERNESS_MAX_MS:
            raise ValueError("turn_detection.eagerness must be low, medium, high or auto")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError("turn_detection.threshold must be between 0 and 1")
        if not 0 <= self.silence_ms <= 10_000:
            raise ValueError("turn_detection.silence_duration_ms must be between 0 and 10000")
        if not 0 <= self.prefix_padding_ms <= 5_000:
            raise ValueError("turn_detection.prefix_padding_ms must be between 0 and 5000")


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    start_sample: int  # first voiced sample, before prefix padding


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    end_sample: int  # end of the last voiced frame


@dataclass(frozen=True, slots=True)
class SpeechPaused:
    """Voice went quiet inside a turn; the turn may end here if no speech follows."""

    end_sample: int


@dataclass(frozen=True, slots=True)
class VoiceOnset:
    """First voiced frame outside a turn: speech may be starting (not yet confirmed)."""

    start_sample: int


@dataclass(frozen=True, slots=True)
class VoiceOnsetCancelled:
    """The voiced run ended before it was long enough to count as speech."""


EndpointEvent = SpeechStarted | SpeechStopped | SpeechPaused | VoiceOnset | VoiceOnsetCancelled


class Endpointer:
    """Feed `(probability, frame_end_sample)` per frame; get speech start/pause/stop events.

    Hysteresis: a frame is voiced above `threshold`, silent below `threshold - 0.15`, and keeps the
    previous state in between, so a wavering probability near the threshold does not flap.
    """

    def __init__(self, config: TurnDetection, rate: int = 16000, pause_ms: int = 160) -> None:
        self.config = config
        self._rate = rate
        self._pause_samples = pause_ms * rate // 1000
        self.reset()

    def reset(self) -> None:
        self.in_speech = False
        self._voiced = False
        self._run_start = 0  # first sample of the current voiced run (before start is confirmed)
        self._run_voiced_samples = 0
        self.last_voiced_end = 0
        self._paused_reported = False

    def feed(self, prob: float, frame_end: int, frame_samples: int) -> list[EndpointEvent]:
        cfg = self.config
        if prob >= cfg.threshold:
            voiced = True
        elif prob < max(cfg.threshold - 0.15, 0.01):
            voiced = False
        else:
            voiced = self._voiced
        self._voiced = voiced
        events: list[EndpointEvent] = []
        frame_start = frame_end - frame_samples
        if voiced:
            if not self.in_speech:
                if self._run_voiced_samples == 0:
                    self._run_start = frame_start
                    events.append(VoiceOnset(frame_start))
                self._run_voiced_samples += frame_samples
                if self._run_voiced_samples * 1000 >= cfg.min_speech_ms * self._rate:
                    self.in_speech = True
                    events.append(SpeechStarted(self._run_start))
            self.last_voiced_end = frame_end
            self._paused_reported = False
            return events
        if not self.in_speech:
            if self._run_voiced_samples:
                events.append(VoiceOnsetCancelled())  # a blip too short to count as speech
            self._run_voiced_samples = 0
            return events
        silence = frame_end - self.last_voiced_end
        if not self._paused_reported and silence >= min(self._pause_samples, cfg.silence_ms * self._rate // 1000):
            self._paused_reported = True
            events.append(SpeechPaused(self.last_voiced_end))
        if silence * 1000 >= cfg.silence_ms * self._rate:
            self.in_speech = False
            self._run_voiced_samples = 0
            events.append(SpeechStopped(self.last_voiced_end))
        return events
