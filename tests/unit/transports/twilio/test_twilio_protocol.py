"""server.transports.twilio.protocol: Twilio Media Streams messages, signatures and TwiML."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from kombain.server.transports.twilio.protocol import (
    TwilioConnected,
    TwilioDtmf,
    TwilioMark,
    TwilioMedia,
    TwilioProtocolError,
    TwilioStart,
    TwilioStop,
    TwilioStreamProtocol,
    connect_stream_twiml,
    twilio_signature,
    valid_twilio_signature,
)

# The placeholders Twilio's "Media Streams - WebSocket Messages" page uses in its examples.
ACCOUNT = "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
STREAM = "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
CALL = "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
SILENCE = b"\xff" * 160  # 20 ms of mu-law silence


def dumps(message: dict[str, Any]) -> str:
    return json.dumps(message)


def connected() -> dict[str, Any]:
    return {"event": "connected", "protocol": "Call", "version": "1.0.0"}


def start(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "accountSid": ACCOUNT,
        "streamSid": STREAM,
        "callSid": CALL,
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"},
    }
    body.update(overrides)
    return {"event": "start", "sequenceNumber": "1", "start": body, "streamSid": STREAM}


def media(payload: bytes | str = SILENCE, *, chunk: Any = "1", timestamp: Any = "5",
          track: str = "inbound", sid: str = STREAM, seq: int = 2) -> dict[str, Any]:
    encoded = payload if isinstance(payload, str) else base64.b64encode(payload).decode()
    return {
        "event": "media",
        "sequenceNumber": str(seq),
        "media": {"track": track, "chunk": chunk, "timestamp": timestamp, "payload": encoded},
        "streamSid": sid,
    }


def dtmf(digit: Any = "1", sid: str = STREAM) -> dict[str, Any]:
    return {"event": "dtmf", "streamSid": sid, "sequenceNumber": "5",
            "dtmf": {"track": "inbound_track", "digit": digit}}


def mark(name: Any = "my label", sid: str = STREAM) -> dict[str, Any]:
    return {"event": "mark", "sequenceNumber": "4", "streamSid": sid, "mark": {"name": name}}


def stop(sid: str = STREAM) -> dict[str, Any]:
    return {"event": "stop", "sequenceNumber": "5", "streamSid": sid,
            "stop": {"accountSid": ACCOUNT, "callSid": CALL}}


def started(**kwargs: Any) -> TwilioStreamProtocol:
    proto = TwilioStreamProtocol(**kwargs)
    proto.receive(dumps(connected()))
    proto.receive(dumps(start()))
    return proto


def error_code(proto: TwilioStreamProtocol, raw: str | bytes) -> str:
    with pytest.raises(TwilioProtocolError) as info:
        proto.receive(raw)
    return str(info.value.code)


# --- a whole call ---------------------------------------------------------------------------------

def test_full_sequence() -> None:
    proto = TwilioStreamProtocol()
    assert (proto.started, proto.stopped, proto.stream_sid, proto.call_sid) == (
        False, False, None, None)

    assert proto.receive(dumps(connected())) == TwilioConnected("Call", "1.0.0")
    assert proto.receive(dumps(start())) == TwilioStart(
        stream_sid=STREAM, call_sid=CALL, account_sid=ACCOUNT, tracks=("inbound",),
        encoding="audio/x-mulaw", sample_rate=8000, channels=1,
        custom_parameters={"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"})
    assert proto.started and proto.stream_sid == STREAM and proto.call_sid == CALL

    frames = [bytes([i]) * 160 for i in range(3)]
    for i, frame in enumerate(frames):
        event = proto.receive(dumps(media(frame, chunk=str(i + 1), timestamp=str(20 * i),
                                          seq=i + 2)))
        assert event == TwilioMedia(frame, "inbound", i + 1, 20 * i)

    assert proto.receive(dumps(dtmf("1"))) == TwilioDtmf("1")
    assert proto.receive(dumps(mark("my label"))) == TwilioMark("my label")
    assert proto.receive(dumps(stop())) == TwilioStop()
    assert proto.stopped


def test_documented_media_payload_decodes() -> None:
    # The payload in the media example on Twilio's WebSocket messages page (a prefix of it).
    payload = ("no+JhoaJjpzSHxAKBgYJDhtEopGKh4aIjZm7JhILBwYIDRg1qZSLh4aIjJevLBUMBwYHDBUsr5eM"
               "iIaHi5SpNRgNCAYHCxImu5mNiIaHipGiRBsOCQYGChAf0pyOiYaGiY+e/x4PCQYGCQ4cUp+QioaG")
    event = started().receive(dumps(media(payload)))
    assert isinstance(event, TwilioMedia)
    assert event.payload == base64.b64decode(payload)
    assert (event.chunk, event.timestamp_ms) == (1, 5)


def test_bytes_messages_are_accepted() -> None:
    proto = TwilioStreamProtocol()
    assert isinstance(proto.receive(dumps(start()).encode()), TwilioStart)
    assert proto.receive(bytearray(dumps(mark("x")).encode())) == TwilioMark("x")


def test_optional_fields_get_defaults() -> None:
    proto = TwilioStreamProtocol()
    message = start()
    for key in ("accountSid", "tracks", "customParameters"):
        del message["start"][key]
    del message["start"]["mediaFormat"]["channels"]
    event = proto.receive(dumps(message))
    assert isinstance(event, TwilioStart)
    assert (event.account_sid, event.tracks, event.custom_parameters, event.channels) == (
        "", ("inbound",), {}, 1)

    bare = {"event": "media", "streamSid": STREAM,
            "media": {"payload": base64.b64encode(SILENCE).decode()}}
    assert proto.receive(dumps(bare)) == TwilioMedia(SILENCE, "inbound", 0, 0)


def test_start_sid_may_be_only_at_top_level() -> None:
    message = start()
    del message["start"]["streamSid"]
    event = TwilioStreamProtocol().receive(dumps(message))
    assert isinstance(event, TwilioStart) and event.stream_sid == STREAM


def test_numbers_as_strings_or_ints() -> None:
    proto = started()
    assert proto.receive(dumps(media(chunk=7, timestamp=140))) == TwilioMedia(
        SILENCE, "inbound", 7, 140)
    assert proto.receive(dumps(media(chunk="8", timestamp="160"))) == TwilioMedia(
        SILENCE, "inbound", 8, 160)
    fmt = {"encoding": "audio/x-mulaw", "sampleRate": "8000", "channels": "1"}
    event = TwilioStreamProtocol().receive(dumps(start(mediaFormat=fmt)))
    assert isinstance(event, TwilioStart) and (event.sample_rate, event.channels) == (8000, 1)


def test_outbound_track_media_is_ignored() -> None:
    proto = started()
    assert proto.receive(dumps(media(track="outbound"))) is None
    assert proto.receive(dumps(media(track="inbound_track"))) == TwilioMedia(
        SILENCE, "inbound_track", 1, 5)


def test_empty_payload_needs_no_action() -> None:
    assert started().receive(dumps(media(b""))) is None


def test_all_dtmf_digits() -> None:
    proto = started()
    for digit in "0123456789*#ABCD":
        assert proto.receive(dumps(dtmf(digit))) == TwilioDtmf(digit)
    assert proto.receive(dumps(dtmf("b"))) == TwilioDtmf("B")


def test_stop_before_start_ends_the_stream() -> None:
    proto = TwilioStreamProtocol()
    assert proto.receive(dumps(stop())) == TwilioStop()
    assert proto.stopped and not proto.started


# --- errors ---------------------------------------------------------------------------------------

def test_message_too_large() -> None:
    proto = started(max_message_bytes=500)
    assert error_code(proto, dumps(media(b"\x00" * 400))) == "message_too_large"
    assert error_code(proto, dumps(media(b"\x00" * 400)).encode()) == "message_too_large"
    # Multi-byte characters count as bytes, not characters.
    text = '{"event":"mark","x":"' + "é" * 250 + '"}'
    assert len(text) < 500 < len(text.encode())
    assert error_code(proto, text) == "message_too_large"
    assert proto.receive(dumps(media())) == TwilioMedia(SILENCE, "inbound", 1, 5)


@pytest.mark.parametrize("raw", ["", "not json", '{"event": ', "{'event': 'mark'}", "[1, 2]",
                                 "null", '"connected"', b"\xff\xfe\x00", "\ud800",
                                 "[" * 100_000, '{"event":"mark","n":' + "9" * 5000 + "}"])
def test_invalid_json(raw: str | bytes) -> None:
    assert error_code(TwilioStreamProtocol(), raw) == "invalid_json"


@pytest.mark.parametrize("message", [{}, {"event": "ring"}, {"event": None}, {"event": 3},
                                     {"event": "clear", "streamSid": STREAM}, {"Event": "media"}])
def test_unknown_event(message: dict[str, Any]) -> None:
    assert error_code(TwilioStreamProtocol(), dumps(message)) == "unknown_event"


@pytest.mark.parametrize("message", [media(), dtmf(), mark()])
def test_not_started(message: dict[str, Any]) -> None:
    assert error_code(TwilioStreamProtocol(), dumps(message)) == "not_started"


def test_already_started() -> None:
    proto = started()
    assert error_code(proto, dumps(start())) == "already_started"
    other = start(streamSid="MZother", callSid="CAother")
    other["streamSid"] = "MZother"
    assert error_code(proto, dumps(other)) == "already_started"
    assert proto.stream_sid == STREAM and proto.call_sid == CALL


@pytest.mark.parametrize("message", [media(sid="MZother"), dtmf(sid="MZother"),
                                     mark(sid="MZother"), stop(sid="MZother")])
def test_unknown_stream(message: dict[str, Any]) -> None:
    proto = started()
    assert error_code(proto, dumps(message)) == "unknown_stream"
    assert not proto.stopped


def test_missing_stream_sid_is_unknown_stream() -> None:
    message = mark()
    del message["streamSid"]
    assert error_code(started(), dumps(message)) == "unknown_stream"


def test_start_with_two_different_sids() -> None:
    message = start()
    message["streamSid"] = "MZother"
    proto = TwilioStreamProtocol()
    assert error_code(proto, dumps(message)) == "unknown_stream"
    assert not proto.started


@pytest.mark.parametrize("payload", ["not base64!", "AAA", "AA==AA==", "//8=\n", "ÿÿÿÿ", 123, None])
def test_invalid_payload(payload: Any) -> None:
    message = media()
    message["media"]["payload"] = payload
    assert error_code(started(), dumps(message)) == "invalid_payload"


def test_payload_too_large() -> None:
    proto = started(max_payload_bytes=160)
    assert isinstance(proto.receive(dumps(media(b"\x01" * 160))), TwilioMedia)
    assert error_code(proto, dumps(media(b"\x01" * 161))) == "invalid_payload"
    assert error_code(proto, dumps(media(b"\x01" * 4000))) == "invalid_payload"


@pytest.mark.parametrize("fmt", [
    {"encoding": "audio/x-alaw", "sampleRate": 8000, "channels": 1},
    {"encoding": "audio/x-mulaw", "sampleRate": 16000, "channels": 1},
    {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 2},
    {"encoding": "audio/x-mulaw", "sampleRate": "fast", "channels": 1},
    {"encoding": None, "sampleRate": 8000, "channels": 1},
    {"encoding": "audio/x-mulaw", "sampleRate": True, "channels": 1},
    "audio/x-mulaw",
])
def test_unsupported_media_format(fmt: Any) -> None:
    proto = TwilioStreamProtocol()
    assert error_code(proto, dumps(start(mediaFormat=fmt))) == "unsupported_media_format"
    assert not proto.started and proto.stream_sid is None


@pytest.mark.parametrize("params", [
    ["a", "b"], "a=b", {"a": 1}, {"a": None}, {"a": {"b": "c"}},
    {f"k{i}": "v" for i in range(5)},
    {"k": "v" * 11}, {"k" * 11: "v"},
])
def test_invalid_parameters(params: Any) -> None:
    proto = TwilioStreamProtocol(max_parameters=4, max_parameter_chars=10)
    assert error_code(proto, dumps(start(customParameters=params))) == "invalid_parameters"
    assert not proto.started


def test_parameters_at_the_bounds() -> None:
    params = {f"k{i}": "v" * 10 for i in range(4)}
    proto = TwilioStreamProtocol(max_parameters=4, max_parameter_chars=10)
    event = proto.receive(dumps(start(customParameters=params)))
    assert isinstance(event, TwilioStart) and event.custom_parameters == params


@pytest.mark.parametrize("digit", ["", "11", "E", "x", "+", 1, None, "١"])
def test_invalid_dtmf(digit: Any) -> None:
    assert error_code(started(), dumps(dtmf(digit))) == "invalid_dtmf"


@pytest.mark.parametrize("message", [connected(), start(), media(), dtmf(), mark(), stop(),
                                     {"event": "ring"}])
def test_stopped(message: dict[str, Any]) -> None:
    proto = started()
    proto.receive(dumps(stop()))
    assert error_code(proto, dumps(message)) == "stopped"
    assert error_code(proto, "garbage") == "stopped"


@pytest.mark.parametrize("message", [
    {"event": "start", "streamSid": STREAM},
    {"event": "start", "start": {"streamSid": STREAM}},
    {"event": "start", "start": {"callSid": CALL}},
    {"event": "media", "streamSid": STREAM, "media": "AAAA"},
    {"event": "dtmf", "streamSid": STREAM},
    {"event": "mark", "streamSid": STREAM, "mark": {}},
    media(chunk="-1"), media(chunk="1.5"), media(timestamp=-5), media(timestamp=True),
    media(chunk="9" * 30), media(timestamp={"ms": 1}),
])
def test_malformed_fields_are_invalid_message(message: dict[str, Any]) -> None:
    proto = TwilioStreamProtocol()
    if message["event"] != "start":
        proto = started()
    assert error_code(proto, dumps(message)) == "invalid_message"


def test_start_with_bad_tracks_is_invalid_message() -> None:
    assert error_code(TwilioStreamProtocol(), dumps(start(tracks="inbound"))) == "invalid_message"


def test_errors_leave_the_protocol_usable() -> None:
    proto = TwilioStreamProtocol(max_message_bytes=4096, max_payload_bytes=320)
    bad_before_start = ["{", dumps({"event": "nope"}), dumps(mark()), "x" * 5000,
                        dumps(start(mediaFormat={"encoding": "audio/l16"})),
                        dumps(start(customParameters={"a": 1}))]
    for raw in bad_before_start:
        with pytest.raises(TwilioProtocolError):
            proto.receive(raw)
        assert not proto.started and proto.stream_sid is None and not proto.stopped
    assert isinstance(proto.receive(dumps(start())), TwilioStart)

    bad_after_start = [dumps(start()), dumps(media("!!")), dumps(media(b"\x00" * 321)),
                       dumps(dtmf("Z")), dumps(mark(sid="MZother")), dumps(stop(sid="MZother")),
                       b"\xc3\x28"]
    for bad in bad_after_start:
        with pytest.raises(TwilioProtocolError):
            proto.receive(bad)
        assert proto.started and proto.stream_sid == STREAM and not proto.stopped
        assert proto.receive(dumps(media())) == TwilioMedia(SILENCE, "inbound", 1, 5)
    assert proto.receive(dumps(stop())) == TwilioStop()


# --- outbound -------------------------------------------------------------------------------------

def test_outbound_media() -> None:
    proto = started()
    message = json.loads(proto.media(b"\x00\x7f\xff"))
    assert message == {"event": "media", "streamSid": STREAM, "media": {"payload": "AH//"}}
    assert base64.b64decode(message["media"]["payload"]) == b"\x00\x7f\xff"


def test_outbound_mark_and_clear() -> None:
    proto = started()
    assert json.loads(proto.mark("reply-1 ✓")) == {
        "event": "mark", "streamSid": STREAM, "mark": {"name": "reply-1 ✓"}}
    assert json.loads(proto.clear()) == {"event": "clear", "streamSid": STREAM}


def test_outbound_messages_are_one_line_json_text() -> None:
    proto = started()
    for out in (proto.media(SILENCE), proto.mark('a "quoted"\nname'), proto.clear()):
        assert isinstance(out, str) and "\n" not in out
        json.loads(out)


def test_outbound_requires_start_and_not_stop() -> None:
    proto = TwilioStreamProtocol()
    for send in (lambda: proto.media(SILENCE), lambda: proto.mark("m"), proto.clear):
        with pytest.raises(TwilioProtocolError) as info:
            send()
        assert info.value.code == "not_started"
    proto.receive(dumps(start()))
    proto.receive(dumps(stop()))
    for send in (lambda: proto.media(SILENCE), lambda: proto.mark("m"), proto.clear):
        with pytest.raises(TwilioProtocolError) as info:
            send()
        assert info.value.code == "stopped"


def test_outbound_argument_checks() -> None:
    proto = started()
    with pytest.raises(TypeError):
        proto.media("not bytes")  # type: ignore[arg-type]  # the wrong type is the point
    with pytest.raises(TwilioProtocolError):
        proto.mark("")


def test_error_is_a_value_error_with_a_code() -> None:
    assert issubclass(TwilioProtocolError, ValueError)
    err = TwilioProtocolError("boom", "invalid_json")
    assert err.code == "invalid_json" and str(err) == "boom"


@pytest.mark.parametrize("kwargs", [{"max_message_bytes": -1}, {"max_payload_bytes": 1.5},
                                    {"max_parameters": True}])
def test_constructor_rejects_bad_limits(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        TwilioStreamProtocol(**kwargs)


# --- signatures -----------------------------------------------------------------------------------

# The vector from twilio-python's tests/unit/test_request_validator.py (the same URL, token and
# parameters as the example on Twilio's webhook security page).
TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309",
          "To": "+18005551212", "Caller": "+14158675309"}
EXPECTED = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_signature_matches_official_vector() -> None:
    assert twilio_signature(TOKEN, URL, PARAMS) == EXPECTED
    assert valid_twilio_signature(TOKEN, URL, PARAMS, EXPECTED)


def test_signature_matches_independent_hmac() -> None:
    data = URL + "".join(k + PARAMS[k] for k in sorted(PARAMS))
    digest = hmac.new(TOKEN.encode(), data.encode(), hashlib.sha1).digest()
    assert twilio_signature(TOKEN, URL, PARAMS) == base64.b64encode(digest).decode()
    bare = base64.b64encode(hmac.new(b"t", b"wss://h/p", hashlib.sha1).digest()).decode()
    assert twilio_signature("t", "wss://h/p") == twilio_signature("t", "wss://h/p", {}) == bare


# Port vectors from the same twilio-python tests.
@pytest.mark.parametrize(("url", "signature"), [
    (URL, "kvajT1Ptam85bY51eRf/AJRuM3w="),  # signed as https://...:443, received without port
    (URL.replace(".com", ".com:1234"), EXPECTED),  # received with a port, signed without
    (URL.replace(".com", ".com:1234").replace("https", "http"), "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),
    (URL.replace("https", "http"), "0ZXoZLH/DfblKGATFgpif+LLRf4="),  # signed with :80
])
def test_signature_port_variants_official(url: str, signature: str) -> None:
    assert valid_twilio_signature(TOKEN, url, PARAMS, signature)


@pytest.mark.parametrize(("received", "signed"), [
    ("wss://voice.example.com/twilio", "wss://voice.example.com:443/twilio"),
    ("wss://voice.example.com:443/twilio", "wss://voice.example.com/twilio"),
    ("https://voice.example.com/hook", "https://voice.example.com:443/hook"),
    ("http://voice.example.com/hook", "http://voice.example.com:80/hook"),
    ("ws://voice.example.com/hook", "ws://voice.example.com:80/hook"),
    ("https://u:p@voice.example.com/hook", "https://u:p@voice.example.com:443/hook"),
    ("https://[2001:db8::1]:8443/hook", "https://[2001:db8::1]/hook"),
    ("https://[2001:db8::1]/hook", "https://[2001:db8::1]:443/hook"),
])
def test_signature_port_variants(received: str, signed: str) -> None:
    signature = twilio_signature(TOKEN, signed, PARAMS)
    assert valid_twilio_signature(TOKEN, received, PARAMS, signature)
    assert valid_twilio_signature(TOKEN, signed, PARAMS, signature)


def test_signature_rejects() -> None:
    assert not valid_twilio_signature("54321", URL, PARAMS, EXPECTED)
    assert not valid_twilio_signature(TOKEN, URL, {**PARAMS, "Digits": "9"}, EXPECTED)
    assert not valid_twilio_signature(TOKEN, URL, None, EXPECTED)
    assert not valid_twilio_signature(TOKEN, URL + "&baz=3", PARAMS, EXPECTED)
    assert not valid_twilio_signature(TOKEN, URL.replace("https", "http"), PARAMS, EXPECTED)
    # Only the scheme's default port is added; a different one must not validate.
    other_port = twilio_signature(TOKEN, URL.replace(".com", ".com:8443"), PARAMS)
    assert not valid_twilio_signature(TOKEN, URL, PARAMS, other_port)
    for garbage in ("", "RSOYDt4T1cUTdK1PDd93/VVr8B8", "RSOYDt4T1cUTdK1PDd93/VVr8B8=\n",
                    "ÄSOYDt4T1cUTdK1PDd93/VVr8B8=", None):
        assert not valid_twilio_signature(TOKEN, URL, PARAMS, garbage)  # type: ignore[arg-type]


def test_signature_without_params() -> None:
    url = "wss://voice.example.com/twilio/media"
    signature = twilio_signature(TOKEN, url)
    assert valid_twilio_signature(TOKEN, url, None, signature)
    assert valid_twilio_signature(TOKEN, url, {}, signature)


# --- TwiML ----------------------------------------------------------------------------------------

def test_twiml_shape() -> None:
    twiml = connect_stream_twiml("wss://voice.example.com/twilio", {"FirstName": "Jane"})
    assert twiml == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        '<Stream url="wss://voice.example.com/twilio">'
        '<Parameter name="FirstName" value="Jane"/></Stream></Connect></Response>')
    assert connect_stream_twiml("wss://h/p") == (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<Response><Connect><Stream url="wss://h/p"/></Connect></Response>')


def test_twiml_escapes_every_attribute() -> None:
    nasty = "\"<&>'"
    twiml = connect_stream_twiml("wss://h/p&x<y>\"'", {nasty: nasty, "multi": "a\nb\tc"},
                                 status_callback="https://h/status/" + nasty)
    assert "\"<&>'" not in twiml
    root = ET.fromstring(twiml.encode("utf-8"))
    assert root.tag == "Response"
    stream = root.find("./Connect/Stream")
    assert stream is not None
    assert stream.get("url") == "wss://h/p&x<y>\"'"
    assert stream.get("statusCallback") == "https://h/status/" + nasty
    parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert parameters == {nasty: nasty, "multi": "a\nb\tc"}


def test_twiml_rejects_what_twilio_or_xml_cannot_carry() -> None:
    with pytest.raises(ValueError):
        connect_stream_twiml("wss://h/p?token=secret")  # Twilio drops the query string
    with pytest.raises(ValueError):
        connect_stream_twiml("")
    with pytest.raises(ValueError):
        connect_stream_twiml("wss://h/p", {"a": "bell\x07"})
    with pytest.raises(TypeError):
        connect_stream_twiml("wss://h/p", {"a": 1})  # type: ignore[dict-item]


# --- robustness -----------------------------------------------------------------------------------

def _check_never_breaks(proto: TwilioStreamProtocol, raw: str | bytes) -> None:
    before = (proto.started, proto.stopped, proto.stream_sid, proto.call_sid)
    try:
        proto.receive(raw)
    except TwilioProtocolError:
        assert (proto.started, proto.stopped, proto.stream_sid, proto.call_sid) == before


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["str", "int", "none", "bool", "float"] + (["list", "dict"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "str":
        return rng.choice(["", "inbound", STREAM, "8000", "audio/x-mulaw", "AAAA", "é", "-1"])
    if kind == "int":
        return rng.choice([0, 1, -1, 8000, 2**70])
    if kind == "float":
        return rng.choice([0.5, 1e308, -0.0])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "none":
        return None
    if kind == "list":
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(3))]
    keys = ["event", "streamSid", "start", "media", "dtmf", "mark", "stop", "payload", "track",
            "chunk", "timestamp", "digit", "name", "callSid", "mediaFormat", "customParameters",
            "tracks", "encoding", "sampleRate", "channels"]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


def test_random_messages_raise_only_protocol_errors() -> None:
    rng = random.Random(20240601)
    events = ["connected", "start", "media", "dtmf", "mark", "stop", "other"]
    for _ in range(3000):
        proto = started() if rng.random() < 0.7 else TwilioStreamProtocol()
        message = _random_json(rng)
        if isinstance(message, dict) and rng.random() < 0.9:
            message["event"] = rng.choice(events)
            if rng.random() < 0.8:
                message["streamSid"] = STREAM
        raw = json.dumps(message)
        if rng.random() < 0.1:
            raw = raw[: rng.randrange(len(raw) + 1)]
        _check_never_breaks(proto, raw)


def test_hypothesis_arbitrary_input() -> None:
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda children: st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=12), children, max_size=4),
        max_leaves=20,
    )
    event_names = st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop"])
    shaped = st.fixed_dictionaries(
        {"event": event_names, "streamSid": st.just(STREAM) | st.text(max_size=5)},
        optional={key: json_values for key in ("start", "media", "dtmf", "mark", "stop")},
    ).map(json.dumps)
    inputs = st.text() | st.binary() | json_values.map(json.dumps) | shaped

    @hypothesis.settings(max_examples=400, deadline=None)
    @hypothesis.given(raw=inputs, after_start=st.booleans())
    def check(raw: str | bytes, after_start: bool) -> None:
        proto = started() if after_start else TwilioStreamProtocol()
        _check_never_breaks(proto, raw)

    check()
