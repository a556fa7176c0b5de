"""A session's speech-recognition settings (changed by session.update); `streaming.transcriber`
re-exports them."""

from __future__ import annotations

from dataclasses import dataclass

from kombain.streaming.endpointer import TurnDetection


@dataclass(frozen=True, slots=True)
class SttConfig:
    """Per-session recognition settings (changed by session.update)."""

    turn_detection: TurnDetection | None = TurnDetection()
    language: str | None = None
    prompt: str | None = None
    partial_interval_ms: int = 400
    idle_partial_interval_ms: int = 0  # when the decoder is idle, partials this often (0: off)
    partials: bool = True
    beam_size: int = 1
    window_pad: float = 2.0
    min_window: float = 10.0
    max_turn_s: float = 30.0
    word_timestamps: bool = False  # finals carry their words' times (cross-attention alignment, VAD-snapped)
    speaker_labels: bool = False  # finals carry the session's speaker label (needs an `embed_voice`)
