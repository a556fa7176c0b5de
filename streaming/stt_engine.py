"""Speech recognisers as engines behind one interface, and the one place that picks an engine.

The live transcriber (streaming/transcriber.py), the REST and Wyoming paths and the lane gate
use only what `SpeechEngine` names: a name, whether it serves more than English, how much work
is pending, `transcribe` (final / partial / offline, with the shared queue's priorities, partial
superseding and batching across callers) and `aclose`. faster-whisper (streaming/whisper_runtime.py)
is the reference engine; Moonshine (streaming/moonshine_runtime.py) is the second. KOMBAIN_STT_MODEL
names the model, and the model names its engine (`engine_of`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from kombain.streaming.models import BUNDLED_MOONSHINE, BUNDLED_STT, ModelNotFound, stt_engine

if TYPE_CHECKING:
    import numpy as np

    from kombain.streaming.decoding import DecodeOptions, DecodeResult, Kind, Segment
    from kombain.streaming.whisper_runtime import WhisperRuntime

ENGINES = ("whisper", "moonshine")
MODEL_NAMES = BUNDLED_STT + BUNDLED_MOONSHINE  # the names a session may ask for (besides aliases)


class EngineLoadError(RuntimeError):
    """KOMBAIN_STT_MODEL names no engine, or its model does not load: the node must not go ready."""


@runtime_checkable
class SpeechEngine(Protocol):
    """What every caller of a speech recogniser uses (see the module docstring)."""

    name: str
    multilingual: bool

    @property
    def pending(self) -> int: ...

    async def transcribe(
        self, audio: np.ndarray, kind: Kind, options: DecodeOptions, key: Any = None,
        on_segment: Callable[[Segment], None] | None = None,
    ) -> DecodeResult: ...

    async def aclose(self) -> None: ...


def engine_of(model: str) -> str:
    """The engine KOMBAIN_STT_MODEL=`model` needs; EngineLoadError naming the setting if none."""
    try:
        return stt_engine(model)
    except ModelNotFound as exc:
        raise EngineLoadError(str(exc)) from None


def load_engine(model: str, *, data_dir: Path, **kwargs: Any) -> WhisperRuntime:
    """Load the engine for KOMBAIN_STT_MODEL=`model` (blocking: call it in a thread). Every
    failure is an EngineLoadError that names the setting and the model. Each engine today is
    built on the Whisper runtime's queue and workers (a subclass that replaces the decode), so
    callers typed for it take any engine."""
    engine = engine_of(model)
    try:
        if engine == "moonshine":
            from kombain.streaming.moonshine_runtime import MoonshineRuntime

            return MoonshineRuntime.load(model, data_dir=data_dir, **kwargs)
        from kombain.streaming.whisper_runtime import WhisperRuntime

        return WhisperRuntime.load(model, data_dir=data_dir, **kwargs)
    except EngineLoadError:
        raise
    except Exception as exc:
        raise EngineLoadError(
            f"KOMBAIN_STT_MODEL={model!r}: the {engine} model did not load: {type(exc).__name__}: {exc}"
        ) from exc


def requested_model_error(requested: str | None, served: str) -> str | None:
    """Why a session's `model` cannot be served here, or None: a name of an engine's model
    (`MODEL_NAMES`) that is not the one this node loaded. Other names (whisper-1, gpt-4o-transcribe,
    ...) are aliases of the served model (server/model_aliases.py)."""
    if requested is None or requested == served or requested not in MODEL_NAMES:
        return None
    return f"model {requested!r} is not loaded on this server; it serves {served!r} (KOMBAIN_STT_MODEL)"


def describe(engine: Any) -> str:
    """One line naming a loaded engine and its model (Wyoming's `info`, logs)."""
    from kombain.streaming.moonshine_runtime import MoonshineRuntime

    if isinstance(engine, MoonshineRuntime):
        return f"Moonshine {engine.name} (ONNX Runtime, int8)"
    return f"Whisper {engine.name} (faster-whisper, batched across clients)"
