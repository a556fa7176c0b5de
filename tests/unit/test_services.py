"""The typed services object: each service published once, transport slots typed by their owner."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from kombain.server.services import Services, SpeechToText, TransportSlots


def _stt(name: str = "tiny.en") -> SpeechToText:
    fake: Any = SimpleNamespace(name=name)
    return SpeechToText(whisper=fake, vad=fake)


def test_a_service_is_published_once() -> None:
    services = Services()
    assert services.stt is None and services.tts is None and services.lane is None
    stt = _stt()
    services.stt = stt
    assert services.stt is stt
    with pytest.raises(AttributeError, match="already published"):
        services.stt = _stt("base")
    assert services.stt is stt


def test_speech_to_text_is_frozen() -> None:
    stt = _stt()
    with pytest.raises(AttributeError):
        stt.turn_model = None  # type: ignore[misc]


def test_model_names_follow_what_is_loaded() -> None:
    services = Services()
    assert services.model_names == []
    services.tts = SimpleNamespace(default_voice="en_US-lessac-medium")  # type: ignore[assignment]
    assert services.model_names == ["piper:en_US-lessac-medium"]
    services.stt = _stt()
    assert services.model_names == ["tiny.en", "piper:en_US-lessac-medium"]


class _Listener:
    pass


def test_transport_slots_are_typed_and_put_once() -> None:
    slots = TransportSlots()
    assert slots.get("audiosocket", _Listener) is None  # not started, or disabled
    listener = _Listener()
    slots.put("audiosocket", listener)
    assert slots.get("audiosocket", _Listener) is listener
    with pytest.raises(RuntimeError, match="already started"):
        slots.put("audiosocket", _Listener())
    with pytest.raises(TypeError, match="audiosocket"):
        slots.get("audiosocket", str)
