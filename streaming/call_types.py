"""What a transport sees of a call: its config, the events it renders, the output port it
implements and the metric hooks the host passes. `streaming.call` re-exports all of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from kombain.streaming.conversation import ConversationEvent, ResponseAudio
from kombain.streaming.endpointer import TurnDetection
from kombain.streaming.responders import Tool
from kombain.streaming.stt_events import SttEvent


class CallError(ValueError):
    """A request the call cannot act on (the caller's mistake); the call goes on."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class CallConfig:
    """What one call does; changed by `update`. Names no protocol."""

    conversation: bool = True  # False: transcription only, the call never speaks
    turn_detection: TurnDetection | None = TurnDetection()
    language: str | None = None
    prompt: str | None = None
    voice: str | None = None  # a voice in the pool's catalog; None -> the pool's default
    instructions: str = ""
    output_rate: int = 24000  # PCM16 rate of reply audio written to the output port
    auto_respond: bool = True  # reply after each turn the turn detector ends
    interruptible: bool = True  # the caller's speech cancels the reply (barge-in)
    interrupt_min_speech_ms: int = 0  # shorter speech only pauses the reply, which then resumes
    interrupt_min_words: int = 0  # words (not backchannels) the interruption must contain
    modalities: tuple[str, ...] = ("audio",)  # ("text",): replies are text only, never synthesised
    tools: tuple[Tool, ...] = ()  # functions the responder may call (the client runs them)
    tool_choice: str = "auto"  # auto | none | required | function (then tool_name)
    tool_name: str | None = None
    max_output_tokens: int | None = None
    idle_timeout_ms: int | None = None  # with turn detection: reply after this long without the caller speaking
    word_timestamps: bool = False  # final transcripts carry their words' times
    speaker_labels: bool = False  # final transcripts carry the speaker (A, B, ...) they are attributed to


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    """A key the caller pressed."""

    digit: str
    at: float


@dataclass(frozen=True, slots=True)
class HangupEvent:
    """The call should end now: the bot said goodbye (IVR hang-up), or it was told to end."""

    reason: str


@dataclass(frozen=True, slots=True)
class IdleTimeoutEvent:
    """The caller said nothing for `idle_timeout_ms` after the last reply was heard: the silence
    (session audio clock) becomes an empty user turn, and the responder is asked to go on."""

    item_id: str
    audio_start_ms: int
    audio_end_ms: int


# ResponseAudio never appears here: it goes to the output port.
CallEvent = SttEvent | ConversationEvent | DtmfEvent | HangupEvent | IdleTimeoutEvent


class AudioOutput(Protocol):
    """Where reply audio goes; the transport implements it (a socket, a track, an RTP stream),
    usually on one of the bases in `streaming.output`.

    `write` takes one paced chunk of PCM16 at `rate`; `hold(True)` pauses what the transport
    buffered (a possible interruption), `hold(False)` resumes; `clear` drops it (barge-in).
    The call binds itself once, when it is built: the port then reports what the caller really
    heard as `listener(response_id, position_ms, interrupted)`."""

    def write(self, audio: ResponseAudio, rate: int) -> None: ...

    def hold(self, held: bool) -> None: ...

    def clear(self) -> None: ...

    def bind(self, listener: Callable[[str, int, bool], None]) -> None: ...


@dataclass(frozen=True, slots=True)
class CallHooks:
    """Metric observers; the call host labels them by transport."""

    vad_seconds: Callable[[float], None] = lambda s: None
    partial_lag: Callable[[float], None] = lambda s: None
    stt_final: Callable[[float], None] = lambda s: None
    turn: Callable[[float], None] = lambda s: None
    barge_in: Callable[[float], None] = lambda s: None
    response: Callable[[str], None] = lambda status: None
    dtmf: Callable[[], None] = lambda: None
    turn_check: Callable[[float], None] = lambda p: None  # the end-of-turn model's verdict
    semantic_fallback: Callable[[], None] = lambda: None  # semantic_vad asked for, model missing
    partial_late: Callable[[], None] = lambda: None  # a partial decode still unfinished when its turn ended
    audio_in: Callable[[float], None] = lambda s: None  # seconds of caller audio taken
    speculation: Callable[[str], None] = lambda outcome: None  # a prepared reply used, or why dropped

