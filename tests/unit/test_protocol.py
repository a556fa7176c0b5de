"""server.realtime.protocol: parsing client events and session.update in both OpenAI dialects."""

from __future__ import annotations

import base64
import json

import pytest

from kombain.server.transports.openai_realtime.protocol import (
    ProtocolError,
    SessionConfig,
    apply_session_update,
    decode_audio_b64,
    error_event,
    parse_event,
    server_event,
    session_object,
)
from kombain.streaming.audio import AudioFormat
from kombain.streaming.endpointer import TurnDetection

MAX = 1024


# --- parse_event ----------------------------------------------------------------------------------

def test_parse_event_valid_str_and_bytes() -> None:
    raw = '{"type": "input_audio_buffer.commit", "event_id": "e1"}'
    assert parse_event(raw, MAX) == {"type": "input_audio_buffer.commit", "event_id": "e1"}
    assert parse_event(raw.encode(), MAX)["type"] == "input_audio_buffer.commit"


@pytest.mark.parametrize("raw", ['{"type": ', "not json", "", "{'type': 'x'}", "[" * 5000, "[" * 33 + "]" * 33,
                                 '{"type": "x", "n": NaN}', '{"type": "x", "n": -Infinity}', '{"type": "x", "n": 1e999}',
                                 '{"type": "x", "n": ' + "1" * 5000 + "}"])
def test_parse_event_malformed_json(raw) -> None:
    with pytest.raises(ProtocolError) as ei:
        parse_event(raw, MAX * 8)
    assert ei.value.code == "invalid_json"
    assert str(ei.value)


@pytest.mark.parametrize("raw", [b"\xff\xfe\x00", '{"type": "\udcff"}', '{"type": "x", "a": "\\ud800"}'])
def test_parse_event_not_utf8(raw) -> None:
    """Undecodable bytes (a text frame arrives surrogate-escaped) and lone surrogate escapes."""
    with pytest.raises(ProtocolError) as ei:
        parse_event(raw, MAX)
    assert ei.value.code == "invalid_encoding"


@pytest.mark.parametrize("eid", [5, ["a"], {"a": 1}, True, "x" * 300])
def test_parse_event_event_id_must_be_a_short_string(eid) -> None:
    with pytest.raises(ProtocolError) as ei:
        parse_event(json.dumps({"type": "x", "event_id": eid}), MAX)
    assert ei.value.param == "event_id"


def test_parse_event_accepts_nesting_and_escaped_pairs() -> None:
    deep = {"type": "x", "a": [[[[{"b": "\U0001f600"}]]]]}
    assert parse_event(json.dumps(deep), MAX) == deep  # json.dumps writes the emoji as a surrogate pair


@pytest.mark.parametrize("raw", ["[]", '"session.update"', "42", "null", '[{"type": "x"}]'])
def test_parse_event_non_object(raw: str) -> None:
    with pytest.raises(ProtocolError) as ei:
        parse_event(raw, MAX)
    assert ei.value.code == "invalid_event"


@pytest.mark.parametrize("raw", ["{}", '{"event_id": "abc"}', '{"type": 5, "event_id": "abc"}', '{"type": null}'])
def test_parse_event_missing_or_bad_type(raw: str) -> None:
    with pytest.raises(ProtocolError) as ei:
        parse_event(raw, MAX)
    assert ei.value.code == "invalid_event"
    assert ei.value.param == "type"
    assert ei.value.event_id == json.loads(raw).get("event_id")


def test_parse_event_too_large() -> None:
    raw = json.dumps({"type": "x", "pad": "a" * MAX})
    with pytest.raises(ProtocolError) as ei:
        parse_event(raw, MAX)
    assert ei.value.code == "message_too_large"
    # Size is checked before parsing: even invalid JSON over the limit is "too large".
    with pytest.raises(ProtocolError) as ei:
        parse_event("x" * (MAX + 1), MAX)
    assert ei.value.code == "message_too_large"
    # Exactly at the limit is fine.
    head, tail = '{"type":"x","p":"', '"}'
    ok = head + "a" * (MAX - len(head) - len(tail)) + tail
    assert len(ok) == MAX
    assert parse_event(ok, MAX)["type"] == "x"


def test_parse_event_limit_is_in_bytes_for_text() -> None:
    raw = json.dumps({"type": "x", "text": "é" * 600}, ensure_ascii=False)
    assert len(raw) < MAX < len(raw.encode())
    with pytest.raises(ProtocolError) as ei:
        parse_event(raw, MAX)
    assert ei.value.code == "message_too_large"


def test_protocol_error_defaults() -> None:
    e = ProtocolError("boom")
    assert isinstance(e, ValueError)
    assert (str(e), e.code, e.param, e.event_id) == ("boom", "invalid_request_error", None, None)


# --- decode_audio_b64 -----------------------------------------------------------------------------

def test_decode_audio_b64_valid() -> None:
    pcm = bytes(range(256)) * 3
    ev = {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
    assert decode_audio_b64(ev) == pcm
    assert decode_audio_b64({"type": "input_audio_buffer.append", "audio": ""}) == b""


@pytest.mark.parametrize("audio", ["not base64!!", "abc", "A", "AA AA", "é"])
def test_decode_audio_b64_invalid(audio: str) -> None:
    with pytest.raises(ProtocolError) as ei:
        decode_audio_b64({"type": "input_audio_buffer.append", "audio": audio, "event_id": "ev9"})
    assert ei.value.code == "invalid_audio"
    assert ei.value.param == "audio"
    assert ei.value.event_id == "ev9"


@pytest.mark.parametrize("event", [{"type": "input_audio_buffer.append"}, {"type": "x", "audio": None},
                                   {"type": "x", "audio": 123}, {"type": "x", "audio": ["AAAA"]}])
def test_decode_audio_b64_missing(event: dict) -> None:
    with pytest.raises(ProtocolError) as ei:
        decode_audio_b64(event)
    assert ei.value.code == "invalid_value"
    assert ei.value.param == "audio"


# --- apply_session_update -------------------------------------------------------------------------

def test_defaults() -> None:
    cfg = SessionConfig()
    assert cfg.input_format == AudioFormat("pcm16", 24000)
    assert cfg.turn_detection == TurnDetection()
    assert cfg.beta_names is False and cfg.kind == "realtime"


def test_ga_transcription_session_update() -> None:
    session = {
        "type": "transcription",
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000},
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": 700}}},
    }
    cfg = apply_session_update(SessionConfig(), session, "session.update")
    assert cfg.kind == "transcription"
    assert cfg.input_format == AudioFormat("pcm16", 16000)
    assert cfg.turn_detection == TurnDetection(silence_ms=700)
    assert cfg.beta_names is False
    assert cfg.output_format == AudioFormat("pcm16", 24000)  # untouched


def test_ga_turn_detection_keeps_unspecified_fields() -> None:
    cfg = SessionConfig(turn_detection=TurnDetection(threshold=0.7, silence_ms=900, prefix_padding_ms=100))
    cfg = apply_session_update(cfg, {"audio": {"input": {"turn_detection": {"prefix_padding_ms": 200}}}}, "session.update")
    assert cfg.turn_detection == TurnDetection(threshold=0.7, silence_ms=900, prefix_padding_ms=200)


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ({"type": "audio/pcmu"}, AudioFormat("mulaw", 8000)),
        ({"type": "audio/pcma"}, AudioFormat("alaw", 8000)),
        ({"type": "audio/pcmu", "rate": 8000}, AudioFormat("mulaw", 8000)),
        ({"type": "audio/pcm"}, AudioFormat("pcm16", 24000)),
        ({"type": "audio/pcm", "rate": 48000}, AudioFormat("pcm16", 48000)),
    ],
)
def test_ga_formats(fmt: dict, expected: AudioFormat) -> None:
    cfg = apply_session_update(SessionConfig(), {"audio": {"input": {"format": fmt}, "output": {"format": fmt}}},
                               "session.update")
    assert cfg.input_format == expected
    assert cfg.output_format == expected


def test_beta_g711_ulaw() -> None:
    cfg = apply_session_update(SessionConfig(), {"input_audio_format": "g711_ulaw"}, "session.update")
    assert cfg.input_format == AudioFormat("mulaw", 8000)
    assert cfg.beta_names is True


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("pcm16", AudioFormat("pcm16", 24000)),
        ("pcm16_16000", AudioFormat("pcm16", 16000)),
        ("pcm16_8000", AudioFormat("pcm16", 8000)),
        ("pcm16_48000", AudioFormat("pcm16", 48000)),
        ("g711_alaw", AudioFormat("alaw", 8000)),
    ],
)
def test_beta_format_names(name: str, expected: AudioFormat) -> None:
    start = SessionConfig(input_format=AudioFormat("mulaw", 8000), output_format=AudioFormat("alaw", 8000))
    cfg = apply_session_update(start, {"input_audio_format": name, "output_audio_format": name}, "session.update")
    assert cfg.input_format == expected and cfg.output_format == expected


def test_beta_transcription_session_update() -> None:
    cfg = apply_session_update(
        SessionConfig(),
        {"input_audio_format": "pcm16_16000", "input_audio_transcription": {"model": "gpt-4o-transcribe", "language": "de",
                                                                            "prompt": "Kombain"}},
        "transcription_session.update",
    )
    assert cfg.kind == "transcription"
    assert cfg.beta_names is True
    assert cfg.input_format == AudioFormat("pcm16", 16000)
    assert (cfg.transcription_model, cfg.language, cfg.prompt) == ("gpt-4o-transcribe", "de", "Kombain")


def test_beta_names_stick_once_set() -> None:
    cfg = apply_session_update(SessionConfig(), {"modalities": ["text"]}, "session.update")
    assert cfg.beta_names is True
    cfg = apply_session_update(cfg, {"instructions": "hi"}, "session.update")
    assert cfg.beta_names is True and cfg.instructions == "hi"


@pytest.mark.parametrize(
    "session",
    [{"turn_detection": None}, {"audio": {"input": {"turn_detection": None}}}],
    ids=["beta", "ga"],
)
def test_turn_detection_null_disables(session: dict) -> None:
    cfg = apply_session_update(SessionConfig(), session, "session.update")
    assert cfg.turn_detection is None
    # And it can be turned on again, from defaults.
    cfg = apply_session_update(cfg, {"turn_detection": {"type": "server_vad", "threshold": 0.6}}, "session.update")
    assert cfg.turn_detection == TurnDetection(threshold=0.6)


def test_update_without_format_keeps_previous() -> None:
    cfg = apply_session_update(SessionConfig(), {"input_audio_format": "g711_alaw"}, "session.update")
    cfg = apply_session_update(cfg, {"voice": "echo"}, "session.update")
    assert cfg.input_format == AudioFormat("alaw", 8000)
    assert cfg.voice == "echo"


@pytest.mark.parametrize(
    ("session", "param"),
    [
        ({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 44100}}}}, "session.audio.input.format"),
        ({"audio": {"input": {"format": {"type": "audio/pcm", "rate": "16000"}}}}, "session.audio.input.format"),
        ({"audio": {"input": {"format": {"type": "audio/pcmu", "rate": 16000}}}}, "session.audio.input.format"),
        ({"audio": {"input": {"format": {"type": "audio/opus"}}}}, "session.audio.input.format"),
        ({"audio": {"output": {"format": 16000}}}, "session.audio.output.format"),
        ({"input_audio_format": "opus"}, "session.input_audio_format"),
        ({"input_audio_format": "pcm16_44100"}, "session.input_audio_format"),
        ({"output_audio_format": "g711"}, "session.output_audio_format"),
        ({"turn_detection": {"threshold": 1.5}}, "session.turn_detection.threshold"),
        ({"turn_detection": {"threshold": 0}}, "session.turn_detection.threshold"),
        ({"turn_detection": {"silence_duration_ms": 20000}}, "session.turn_detection.silence_duration_ms"),
        ({"turn_detection": {"prefix_padding_ms": -5}}, "session.turn_detection.prefix_padding_ms"),
        ({"turn_detection": {"threshold": "high"}}, "session.turn_detection.threshold"),
        ({"turn_detection": {"silence_duration_ms": float("inf")}}, "session.turn_detection.silence_duration_ms"),
        ({"turn_detection": {"type": "semantic_vad", "eagerness": "eager"}}, "session.turn_detection.eagerness"),
        ({"turn_detection": {"type": "semantic_vad", "silence_duration_ms": 300}},
         "session.turn_detection.silence_duration_ms"),
        ({"turn_detection": {"type": "server_vad", "eagerness": "low"}}, "session.turn_detection.eagerness"),
        ({"turn_detection": {"kombain_interrupt_min_speech_ms": -1}},
         "session.turn_detection.kombain_interrupt_min_speech_ms"),
        ({"turn_detection": {"kombain_interrupt_min_words": "two"}}, "session.turn_detection.kombain_interrupt_min_words"),
        ({"turn_detection": {"type": "push_to_talk"}}, "session.turn_detection.type"),
        ({"turn_detection": "server_vad"}, "session.turn_detection"),
        ({"audio": {"input": {"turn_detection": {"threshold": 0}}}}, "session.audio.input.turn_detection.threshold"),
        ({"type": "chat"}, "session.type"),
        ({"audio": "pcm16"}, "session.audio"),
        ({"input_audio_transcription": {"prompt": "x" * 2001}}, "session.input_audio_transcription"),
        ({"input_audio_transcription": {"language": 5}}, "session.input_audio_transcription"),
    ],
)
def test_invalid_updates_raise(session: dict, param: str) -> None:
    with pytest.raises(ProtocolError) as ei:
        apply_session_update(SessionConfig(), session, "session.update")
    assert ei.value.code == "invalid_value"
    assert ei.value.param == param


def test_session_must_be_object() -> None:
    with pytest.raises(ProtocolError) as ei:
        apply_session_update(SessionConfig(), ["x"], "session.update")
    assert ei.value.param == "session"


# --- session_object -------------------------------------------------------------------------------

ALL_FORMATS = [AudioFormat("pcm16", r) for r in (8000, 16000, 22050, 24000, 48000)] + [
    AudioFormat("mulaw", 8000), AudioFormat("alaw", 8000)]


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=lambda f: f"{f.encoding}{f.rate}")
@pytest.mark.parametrize("beta", [False, True], ids=["ga", "beta"])
def test_session_object_round_trips_formats(fmt: AudioFormat, beta: bool) -> None:
    other = AudioFormat("alaw", 8000) if fmt != AudioFormat("alaw", 8000) else AudioFormat("pcm16", 16000)
    cfg = SessionConfig(input_format=fmt, output_format=other, beta_names=beta,
                        turn_detection=TurnDetection(threshold=0.6, silence_ms=800, prefix_padding_ms=200))
    obj = session_object("sess_1", cfg, "gpt-realtime")
    assert obj["id"] == "sess_1" and obj["model"] == "gpt-realtime"
    # The reported object, sent back as an update, reproduces the same settings.
    back = apply_session_update(SessionConfig(), json.loads(json.dumps(obj)), "session.update")
    assert back.input_format == fmt
    assert back.output_format == other
    assert back.turn_detection == cfg.turn_detection
    assert back.beta_names is beta


def test_session_object_ga_shape() -> None:
    cfg = SessionConfig(input_format=AudioFormat("pcm16", 16000), output_format=AudioFormat("mulaw", 8000))
    obj = session_object("s", cfg, "m")
    assert obj["type"] == "realtime" and obj["object"] == "realtime.session"
    assert obj["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 16000}
    assert obj["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert obj["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500
    assert "input_audio_format" not in obj
    # A transcription session has no output audio.
    tobj = session_object("s", SessionConfig(kind="transcription", turn_detection=None), "m")
    assert "output" not in tobj["audio"]
    assert tobj["output_modalities"] == ["text"]
    assert tobj["audio"]["input"]["turn_detection"] is None


def test_session_object_beta_shape() -> None:
    cfg = SessionConfig(kind="transcription", input_format=AudioFormat("pcm16", 16000), beta_names=True)
    obj = session_object("s", cfg, "m")
    assert obj["object"] == "realtime.transcription_session"
    assert obj["input_audio_format"] == "pcm16_16000"
    assert obj["output_audio_format"] == "pcm16"
    assert "audio" not in obj


# --- server events --------------------------------------------------------------------------------

def test_error_event_shape() -> None:
    ev = error_event("bad thing", "invalid_value", "session.type", "evt_7")
    assert ev["type"] == "error"
    assert ev["event_id"].startswith("event_") and len(ev["event_id"]) > len("event_")
    assert ev["error"] == {"type": "invalid_request_error", "code": "invalid_value", "message": "bad thing",
                           "param": "session.type", "event_id": "evt_7"}
    ev2 = error_event("oops", "server_error", type_="server_error")
    assert ev2["error"]["type"] == "server_error"
    assert ev2["error"]["param"] is None and ev2["error"]["event_id"] is None
    assert ev2["event_id"] != ev["event_id"]
    json.dumps(ev)  # serialisable


def test_server_event_fields() -> None:
    ev = server_event("session.created", session={"id": "s"})
    assert ev["type"] == "session.created" and ev["session"] == {"id": "s"}
    assert set(ev) == {"event_id", "type", "session"}


def test_semantic_vad_and_interruption_settings() -> None:
    cfg = apply_session_update(SessionConfig(), {"audio": {"input": {"turn_detection": {
        "type": "semantic_vad", "eagerness": "high", "kombain_interrupt_min_speech_ms": 400,
        "kombain_interrupt_min_words": 1}}}}, "session.update")
    td = cfg.turn_detection
    assert td is not None and td.semantic and td.eagerness == "high" and td.silence_ms == 1200
    assert (cfg.interrupt_min_speech_ms, cfg.interrupt_min_words) == (400, 1)
    out = session_object("sess_1", cfg, "m")["audio"]["input"]["turn_detection"]
    assert out["type"] == "semantic_vad" and out["eagerness"] == "high"
    assert out["kombain_interrupt_min_speech_ms"] == 400
    # Back to server_vad: the silence is the default again unless given.
    cfg = apply_session_update(cfg, {"turn_detection": {"type": "server_vad"}}, "session.update")
    assert cfg.turn_detection == TurnDetection()
