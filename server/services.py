"""The process's shared services, typed: each is published once by the lifespan as it comes up.

`state.services.stt` is None until speech recognition is loaded (or when it is disabled), and so
on for each; handlers check for None and answer 503. Transports keep what they own (a listener,
a call manager) in `services.transports`, under their TransportSpec name, so this module names
no transport.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from kombain.server.file_models import FileModels
    from kombain.server.lane.service import LaneService
    from kombain.streaming.end_of_turn import TurnPredictor
    from kombain.streaming.responders import IvrScript
    from kombain.streaming.tts import VoicePool
    from kombain.streaming.vad import SileroVadModel
    from kombain.streaming.whisper_runtime import WhisperRuntime

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SpeechToText:
    """Speech recognition and what a call's turn-taking needs with it, loaded together."""

    whisper: WhisperRuntime  # the engine KOMBAIN_STT_MODEL picked: faster-whisper or Moonshine (stt_engine.py)
    vad: SileroVadModel
    turn_model: TurnPredictor | None = None  # semantic_vad; None: calls fall back to server_vad


class TransportSlots:
    """What each transport keeps for the app's life (a listener, a call manager), under its
    TransportSpec name; put once at its start, read by its own routes."""

    def __init__(self) -> None:
        self._slots: dict[str, object] = {}

    def put(self, name: str, value: object) -> None:
        if name in self._slots:
            raise RuntimeError(f"transport {name!r} is already started")
        self._slots[name] = value

    def get(self, name: str, kind: type[T]) -> T | None:
        """The object `name` put, or None while it is not started (or disabled)."""
        value = self._slots.get(name)
        if value is None:
            return None
        if isinstance(value, kind):
            return value
        raise TypeError(f"transport {name!r} holds a {type(value).__name__}, not a {kind.__name__}")


@dataclass
class Services:
    """The shared services; each None until its component is up, and set only once."""

    tts: VoicePool | None = None
    stt: SpeechToText | None = None
    ivr_script: IvrScript | None = None  # KOMBAIN_IVR_SCRIPT, loaded with speech recognition
    file_models: FileModels | None = None  # translation and diarization, loaded on first use
    lane: LaneService | None = None
    transports: TransportSlots = field(default_factory=TransportSlots)

    def __setattr__(self, name: str, value: Any) -> None:
        # Published once, read without locks: a service replaced under a live call would be a bug.
        if getattr(self, name, None) is not None:
            raise AttributeError(f"services.{name} is already published")
        object.__setattr__(self, name, value)

    @property
    def model_names(self) -> list[str]:
        """The loaded models, as /readyz lists them."""
        names = [self.stt.whisper.name] if self.stt is not None else []
        if self.tts is not None:
            names.append(f"piper:{self.tts.default_voice}")
        return names
