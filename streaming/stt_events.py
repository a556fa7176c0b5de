"""Events a transcription session emits; transports turn them into their own wire format."""

from __future__ import annotations

from dataclasses import dataclass

from kombain.streaming.whisper_runtime import Word


@dataclass(frozen=True, slots=True)
class SpeechStartedEvent:
    item_id: str
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class VoiceOnsetEvent:
    """A voiced frame that may start a turn; `at` is when its first sample arrived (clock)."""

    at: float


@dataclass(frozen=True, slots=True)
class VoiceOnsetCancelledEvent:
    pass


@dataclass(frozen=True, slots=True)
class SpeechStoppedEvent:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class CommittedEvent:
    item_id: str
    previous_item_id: str | None


@dataclass(frozen=True, slots=True)
class ClearedEvent:
    pass


@dataclass(frozen=True, slots=True)
class TranscriptDeltaEvent:
    item_id: str
    delta: str
    audio_end_ms: int  # end of the audio this partial covers (session clock)
    lag_s: float  # arrival of that audio to now


@dataclass(frozen=True, slots=True)
class TranscriptCompletedEvent:
    item_id: str
    transcript: str
    audio_start_ms: int
    audio_end_ms: int
    latency_s: float  # end-of-turn decision (or commit) to now
    language: str
    decode_s: float  # model time of the decode that produced it (possibly speculative, before the decision)
    speech_end_at: float  # clock time the last voiced sample arrived
    decided_at: float  # clock time the turn was ended (endpointer or commit)
    # With SttConfig.word_timestamps: the words, times in seconds on the session's audio clock.
    words: tuple[Word, ...] = ()
    speaker: str | None = None  # with SttConfig.speaker_labels: the session's speaker label (A, B, ...)


@dataclass(frozen=True, slots=True)
class TranscriptFailedEvent:
    item_id: str
    code: str
    message: str


SttEvent = (
    SpeechStartedEvent
    | VoiceOnsetEvent
    | VoiceOnsetCancelledEvent
    | SpeechStoppedEvent
    | CommittedEvent
    | ClearedEvent
    | TranscriptDeltaEvent
    | TranscriptCompletedEvent
    | TranscriptFailedEvent
)
