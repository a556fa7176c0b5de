"""Fuzz strict_json.loads and the realtime client-event parser (parse_event, session.update)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kombain.server import strict_json
from kombain.server.transports.openai_realtime.protocol import (
    ProtocolError,
    SessionConfig,
    apply_session_update,
    decode_audio_b64,
    parse_event,
)
from tests.fuzz.strategies import KIB64, fuzz, hostile_values, json_values, timed

# JSON-ish text: valid documents, their prefixes, and the tokens parsers trip over.
_TOKENS = ["{", "}", "[", "]", ",", ":", '"', "\\u", "\\ud800", "NaN", "Infinity", "-Infinity",
           "1e400", "9" * 5000, "true", "null", " ", '"a"', "\x00", "\udcff", "é"]
json_like = st.one_of(
    json_values.map(json.dumps),
    json_values.map(json.dumps).flatmap(lambda s: st.integers(0, len(s)).map(lambda i: s[:i])),
    st.lists(st.sampled_from(_TOKENS), max_size=40).map("".join),
    st.text(max_size=200),
)


@fuzz(400)
@given(raw=st.one_of(json_like, json_like.map(lambda s: s.encode("utf-8", "surrogatepass")),
                     st.binary(max_size=200)))
def test_strict_json_raises_only_json_input_error(raw: str | bytes) -> None:
    try:
        value = strict_json.loads(raw)
    except strict_json.JsonInputError as exc:
        assert exc.code in ("invalid_json", "invalid_encoding")
        return
    # What it accepts re-serialises as strict JSON (no NaN, no lone surrogates).
    json.dumps(value, allow_nan=False).encode("utf-8")


def test_strict_json_bounded_work_on_64k() -> None:
    hostile = ["[" * KIB64, "{\"a\":" * (KIB64 // 5), "9" * KIB64, "[1," * (KIB64 // 3) + "1]",
               '"' + "\\ud800" * (KIB64 // 6) + '"', "[" * 31 + "]" * 31 + " " * KIB64,
               json.dumps({"k" * 100: ["x" * 100] * 600})]
    for raw in hostile:
        timed(lambda raw=raw: strict_json.loads(raw), 0.5)


event_types = st.sampled_from(["session.update", "transcription_session.update", "input_audio_buffer.append",
                               "input_audio_buffer.commit", "response.create", "conversation.item.create"])
events = st.fixed_dictionaries(
    {"type": event_types | hostile_values},
    optional={"event_id": hostile_values | st.text(min_size=250, max_size=300), "session": hostile_values,
              "audio": hostile_values | st.binary(max_size=30).map(lambda b: b.hex())},
)


@fuzz(300)
@given(raw=st.one_of(events.map(json.dumps), json_like), max_bytes=st.sampled_from([16, 1024, 1 << 20]),
       as_bytes=st.booleans())
def test_parse_event_raises_only_protocol_error(raw: str, max_bytes: int, as_bytes: bool) -> None:
    data: str | bytes = raw.encode("utf-8", "surrogatepass") if as_bytes else raw
    try:
        event = parse_event(data, max_bytes)
    except ProtocolError as exc:
        assert isinstance(exc.code, str) and exc.event_id is None or isinstance(exc.event_id, str)
        return
    assert isinstance(event, dict) and isinstance(event["type"], str)
    try:
        decode_audio_b64(event)
    except ProtocolError:
        pass


# session.update payloads shaped like real ones, with any value in any slot.
_fmt = st.one_of(hostile_values, st.sampled_from(["pcm16", "g711_ulaw", "pcm16_8000", "opus"]),
                 st.fixed_dictionaries({}, optional={"type": st.sampled_from(["audio/pcm", "audio/pcmu"])
                                                     | hostile_values, "rate": hostile_values
                                                     | st.sampled_from([8000, 24000, 44100, True])}))
_turn = st.one_of(hostile_values, st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["server_vad", "semantic_vad"]) | hostile_values,
    "eagerness": st.sampled_from(["low", "auto"]) | hostile_values,
    "threshold": hostile_values, "silence_duration_ms": hostile_values, "prefix_padding_ms": hostile_values,
    "create_response": hostile_values, "interrupt_response": hostile_values,
    "kombain_interrupt_min_speech_ms": hostile_values, "kombain_interrupt_min_words": hostile_values,
}))
_transcription = st.one_of(hostile_values, st.fixed_dictionaries({}, optional={
    "model": hostile_values, "language": hostile_values, "prompt": hostile_values}))
sessions = st.one_of(
    hostile_values,
    st.fixed_dictionaries({}, optional={
        "type": st.sampled_from(["realtime", "transcription"]) | hostile_values,
        "instructions": hostile_values, "voice": hostile_values, "modalities": hostile_values,
        "input_audio_format": _fmt, "output_audio_format": _fmt, "turn_detection": _turn,
        "input_audio_transcription": _transcription,
        "audio": st.one_of(hostile_values, st.fixed_dictionaries({}, optional={
            "input": st.one_of(hostile_values, st.fixed_dictionaries({}, optional={
                "format": _fmt, "transcription": _transcription, "turn_detection": _turn})),
            "output": st.one_of(hostile_values, st.fixed_dictionaries({}, optional={
                "format": _fmt, "voice": hostile_values})),
        })),
    }),
)


@fuzz(600)
@given(session=sessions, event_type=st.sampled_from(["session.update", "transcription_session.update"]))
def test_session_update_raises_only_protocol_error(session: Any, event_type: str) -> None:
    try:
        cfg = apply_session_update(SessionConfig(), session, event_type)
    except ProtocolError as exc:
        assert exc.param is None or exc.param.startswith("session")
        return
    assert isinstance(cfg, SessionConfig)


def test_parse_event_bounded_work_on_64k() -> None:
    audio = json.dumps({"type": "input_audio_buffer.append", "audio": "A" * KIB64})
    for raw in (audio, audio.encode(), "[" * KIB64, "é" * KIB64, '{"type":"x","a":' + "[" * 40 + "]" * 40 + "}"):
        timed(lambda raw=raw: parse_event(raw, 1 << 20), 0.5)
