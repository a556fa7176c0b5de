"""server.transports.asterisk_ws.protocol: chan_websocket control messages, media, commands."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from kombain.server.transports.asterisk_ws.protocol import (
    ERROR_CODES,
    FORMATS,
    AsteriskProtocolError,
    AsteriskWsProtocol,
    DtmfEnd,
    ErrorReport,
    Hangup,
    MarkProcessed,
    Media,
    MediaStart,
    MediaXoff,
    MediaXon,
    OtherControl,
    Status,
)

CHANNEL = "WebSocket/connection1/0x7f2c3c001230"
CHANNEL_ID = "1761245643.1"
CONN = "e226e283-c90a-4ea9-9e37-389000b9ef47"
# The shape a production Asterisk 22 sends: connection_id, channel, channel_id, format, size, ptime.
PLAIN_START = (f"MEDIA_START connection_id:{CONN} channel:{CHANNEL} channel_id:{CHANNEL_ID} "
               "format:ulaw optimal_frame_size:160 ptime:20")
JSON_START = json.dumps({
    "event": "MEDIA_START", "connection_id": CONN, "channel": CHANNEL, "channel_id": CHANNEL_ID,
    "format": "slin16", "optimal_frame_size": 640, "ptime": 20,
    "channel_variables": {"MEDIA_WEBSOCKET_CONNECTION_ID": CONN,
                          "MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE": "640"},
})


def started(text: str = PLAIN_START, **limits: int) -> AsteriskWsProtocol:
    proto = AsteriskWsProtocol(**limits)
    proto.receive_text(text)
    return proto


def code_of(fn: Callable[[], object]) -> str:
    with pytest.raises(AsteriskProtocolError) as ei:
        fn()
    assert ei.value.code in ERROR_CODES
    assert str(ei.value)  # a message fit for a log line
    return ei.value.code


# --- whole sessions -------------------------------------------------------------------------------

def test_plain_text_session() -> None:
    proto = AsteriskWsProtocol()
    assert (proto.started, proto.format, proto.encoding, proto.rate) == (False, None, None, None)
    assert proto.answer() == "ANSWER"  # before MEDIA_START commands are plain text

    start = proto.receive_text(PLAIN_START)
    assert start == MediaStart(connection_id=CONN, channel=CHANNEL, channel_id=CHANNEL_ID,
                               format="ulaw", rate=8000, optimal_frame_size=160, ptime_ms=20,
                               extra={})
    assert (proto.started, proto.format, proto.encoding) == (True, "ulaw", "mulaw")
    assert proto.rate == 8000
    assert proto.media_start == start
    assert proto.frame_bytes() == 160
    assert proto.json_mode is False

    frame = bytes(range(160))
    assert proto.receive_binary(frame) == Media(frame)
    assert proto.receive_binary(bytearray(b"\xff" * 80)) == Media(b"\xff" * 80)  # a short one too

    assert proto.receive_text(f"DTMF_END digit:5 channel_id:{CHANNEL_ID}") == DtmfEnd("5")
    assert proto.receive_text("DTMF_END digit:#") == DtmfEnd("#")  # first releases: no channel_id
    assert proto.mark_media("reply-1") == "MARK_MEDIA reply-1"

    assert proto.receive_text("MEDIA_XOFF") == MediaXoff()
    assert proto.paused is True
    assert proto.receive_binary(frame) == Media(frame)  # media from Asterisk still flows
    assert proto.receive_text("MEDIA_XON\r\n") == MediaXon()
    assert proto.paused is False

    assert proto.receive_text("MEDIA_MARK_PROCESSED reply-1") == MarkProcessed("reply-1")
    assert proto.flush_media() == "FLUSH_MEDIA"
    status = proto.receive_text(
        f"STATUS channel_id:{CHANNEL_ID} queue_length:43 xon_level:800 xoff_level:900 "
        "queue_full:false bulk_media:true media_paused:false")
    assert isinstance(status, Status)
    assert status.fields["queue_length"] == "43"
    assert status.fields["bulk_media"] == "true"
    assert proto.receive_text("MEDIA_BUFFERING_COMPLETED batch-7") == OtherControl(
        "MEDIA_BUFFERING_COMPLETED", {"correlation_id": "batch-7"})
    assert proto.receive_text("QUEUE_DRAINED") == OtherControl("QUEUE_DRAINED", {})
    assert proto.receive_text("HANGUP") == Hangup()
    assert proto.hangup() == "HANGUP"


def test_json_session() -> None:
    proto = AsteriskWsProtocol()
    start = proto.receive_text(JSON_START)
    assert isinstance(start, MediaStart)
    assert (start.format, start.rate, start.optimal_frame_size, start.ptime_ms) == (
        "slin16", 16000, 640, 20)
    assert (start.connection_id, start.channel, start.channel_id) == (CONN, CHANNEL, CHANNEL_ID)
    assert start.variables == {"MEDIA_WEBSOCKET_CONNECTION_ID": CONN,
                               "MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE": "640"}
    assert start.extra == {}
    assert proto.json_mode is True
    assert (proto.encoding, proto.rate, proto.frame_bytes()) == ("pcm16", 16000, 640)

    pcm = b"\x01\x00" * 320
    assert proto.receive_binary(pcm) == Media(pcm)

    ev = {"channel_id": CHANNEL_ID}
    assert proto.receive_text(json.dumps({"event": "DTMF_END", **ev, "digit": "9"})) == DtmfEnd("9")
    assert json.loads(proto.mark_media("reply-1")) == {"command": "MARK_MEDIA",
                                                       "correlation_id": "reply-1"}
    assert proto.receive_text(json.dumps({"event": "MEDIA_XOFF", **ev})) == MediaXoff()
    assert proto.paused is True
    assert proto.receive_text(json.dumps({"event": "MEDIA_XON", **ev})) == MediaXon()
    assert proto.paused is False
    # Pretty-printed across lines is allowed: one object per TEXT frame.
    mark = json.dumps({"event": "MEDIA_MARK_PROCESSED", **ev, "correlation_id": "reply-1"},
                      indent=2)
    assert proto.receive_text(mark) == MarkProcessed("reply-1")
    status = proto.receive_text(json.dumps({
        "event": "STATUS", **ev, "queue_length": 43, "xon_level": 800, "xoff_level": 900,
        "queue_full": False, "bulk_media": True, "media_paused": False}))
    assert status == Status({"channel_id": CHANNEL_ID, "queue_length": "43", "xon_level": "800",
                             "xoff_level": "900", "queue_full": "false", "bulk_media": "true",
                             "media_paused": "false"})
    done = proto.receive_text(json.dumps(
        {"event": "MEDIA_BUFFERING_COMPLETED", **ev, "correlation_id": ""}))
    assert done == OtherControl("MEDIA_BUFFERING_COMPLETED", {**ev, "correlation_id": ""})
    assert proto.receive_text(json.dumps({"event": "HANGUP", **ev})) == Hangup()
    assert json.loads(proto.hangup()) == {"command": "HANGUP"}


# --- MEDIA_START details --------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_maps_and_sizes_twenty_ms(fmt: str) -> None:
    encoding, rate = FORMATS[fmt]
    proto = started(f"MEDIA_START connection_id:c channel:WebSocket/c/0x1 format:{fmt}")
    assert (proto.format, proto.encoding, proto.rate) == (fmt, encoding, rate)
    width = 2 if encoding == "pcm16" else 1
    assert proto.frame_bytes() == rate // 50 * width


def test_format_table_matches_asterisk() -> None:
    assert FORMATS["ulaw"] == ("mulaw", 8000)
    assert FORMATS["alaw"] == ("alaw", 8000)
    assert FORMATS["slin"] == ("pcm16", 8000)
    assert FORMATS["slin16"] == ("pcm16", 16000)
    assert FORMATS["slin44"] == ("pcm16", 44100)  # codec_builtin.c: 44.1 kHz, minimum_bytes 882
    assert FORMATS["slin192"] == ("pcm16", 192000)


def test_first_release_media_start_without_channel_id_or_ptime() -> None:
    proto = AsteriskWsProtocol()
    start = proto.receive_text(
        f"MEDIA_START connection_id:{CONN} channel:WebSocket/connectionid format:ulaw "
        "optimal_frame_size:160")
    assert isinstance(start, MediaStart)
    assert (start.channel_id, start.ptime_ms, start.optimal_frame_size) == ("", 20, 160)


def test_passthrough_frame_size_zero_falls_back_to_twenty_ms() -> None:
    proto = started("MEDIA_START connection_id:c channel:x format:slin optimal_frame_size:0 "
                    "ptime:20")
    assert proto.frame_bytes() == 320
    assert proto.media_start is not None and proto.media_start.optimal_frame_size == 320


def test_reported_frame_size_wins_and_other_ptime_is_kept() -> None:
    proto = started("MEDIA_START connection_id:c channel:x format:alaw optimal_frame_size:240 "
                    "ptime:30")
    assert proto.frame_bytes() == 240
    assert proto.media_start is not None and proto.media_start.ptime_ms == 30
    proto = started("MEDIA_START format:slin48 ptime:10")
    assert proto.frame_bytes() == 960  # 10 ms of 48 kHz 16-bit


def test_field_values_keep_colons_and_unknown_fields_go_to_extra() -> None:
    proto = AsteriskWsProtocol()
    start = proto.receive_text(
        "MEDIA_START connection_id:c:1 channel:WebSocket/media:8088/0x1 channel_id:a:b:c "
        "format:slin16 optimal_frame_size:640 ptime:20 remote:ws://10.0.0.1:8088/media sample:")
    assert isinstance(start, MediaStart)
    assert start.connection_id == "c:1"
    assert start.channel == "WebSocket/media:8088/0x1"
    assert start.channel_id == "a:b:c"
    assert start.extra == {"remote": "ws://10.0.0.1:8088/media", "sample": ""}
    status = proto.receive_text("STATUS channel_id:x:y:z queue_length:3")
    assert status == Status({"channel_id": "x:y:z", "queue_length": "3"})


def test_json_extra_fields_become_text() -> None:
    start = AsteriskWsProtocol().receive_text(json.dumps({
        "event": "MEDIA_START", "format": "ulaw", "optimal_frame_size": 160, "ptime": 20,
        "direction": "both", "flag": True, "nothing": None, "nested": {"a": [1, 2]},
        "channel_variables": {"N": 5}}))
    assert isinstance(start, MediaStart)
    assert start.extra == {"direction": "both", "flag": "true", "nothing": "",
                           "nested": '{"a":[1,2]}'}
    assert start.variables == {"N": "5"}


def test_dtmf_digits() -> None:
    proto = started()
    for digit in "0123456789*#ABCD":
        assert proto.receive_text(f"DTMF_END digit:{digit}") == DtmfEnd(digit)
    assert proto.receive_text("DTMF_END digit:b") == DtmfEnd("B")


def test_error_event_keeps_its_free_text() -> None:
    proto = started()
    err = proto.receive_text(
        f"ERROR channel_id:{CHANNEL_ID} error_text:FLUSH_MEDIA not supported in passthrough mode")
    assert err == ErrorReport("FLUSH_MEDIA not supported in passthrough mode",
                              {"channel_id": CHANNEL_ID,
                               "error_text": "FLUSH_MEDIA not supported in passthrough mode"})
    err = proto.receive_text(json.dumps({"event": "ERROR", "channel_id": CHANNEL_ID,
                                         "error_text": "Unable to parse JSON command"}))
    assert isinstance(err, ErrorReport) and err.text == "Unable to parse JSON command"


def test_mark_processed_tolerates_a_key_prefix_and_no_id() -> None:
    proto = started()
    assert proto.receive_text("MEDIA_MARK_PROCESSED correlation_id:m-2") == MarkProcessed("m-2")
    assert proto.receive_text("MEDIA_MARK_PROCESSED") == MarkProcessed("")
    assert proto.receive_text('{"event":"MEDIA_MARK_PROCESSED"}') == MarkProcessed("")


# --- errors ---------------------------------------------------------------------------------------

TEXT_ERRORS = [
    ("message_too_large", "X" * 1025),
    ("message_too_large", "é" * 600),  # 600 characters, 1200 UTF-8 bytes
    ("invalid_control", ""),
    ("invalid_control", " \r\n"),
    ("invalid_control", "\ud800"),
    ("invalid_control", "{not json"),
    ("invalid_control", "[1, 2]"),
    ("invalid_control", "{}"),
    ("invalid_control", '{"event": 5}'),
    ("invalid_control", '{"command": "ANSWER"}'),
    ("invalid_control", "[" * 500 + "]" * 500),
    ("invalid_control", '{"event": "MEDIA_START", "x": ' + "[" * 400 + "]" * 400 + "}"),
    ("invalid_control", "media_start format:ulaw"),
    ("invalid_control", "hello world"),
    ("invalid_control", '{"event": "not a word"}'),
    ("invalid_control", "STATUS queue_length"),
    ("invalid_control", "STATUS :3"),
    ("invalid_control", "STATUS 9key:3"),
    ("invalid_control", "STATUS " + " ".join(f"k{i}:v" for i in range(9))),
    ("invalid_control", json.dumps({"event": "STATUS", **{f"k{i}": i for i in range(9)}})),
    ("invalid_control", "MEDIA_START connection_id:c"),
    ("invalid_control", "MEDIA_START format:ulaw ptime:abc"),
    ("invalid_control", "MEDIA_START format:ulaw ptime:0"),
    ("invalid_control", "MEDIA_START format:ulaw ptime:1_0"),
    ("invalid_control", "MEDIA_START format:ulaw optimal_frame_size:-1"),
    ("invalid_control", "MEDIA_START format:ulaw optimal_frame_size:1e3"),
    ("invalid_control", "MEDIA_START format:ulaw optimal_frame_size:99999"),
    ("invalid_control", "MEDIA_START format:slin16 optimal_frame_size:641"),
    ("invalid_control", '{"event": "MEDIA_START", "format": "ulaw", "ptime": 20.0}'),
    ("invalid_control", '{"event": "MEDIA_START", "format": "ulaw", "ptime": true}'),
    ("unknown_control", "MEDIA_TELEPORT where:mars"),
    ("unknown_control", "FOO"),
    ("unknown_control", '{"event": "SOMETHING_NEW", "channel_id": "1"}'),
    ("unsupported_format", "MEDIA_START format:opus optimal_frame_size:0"),
    ("unsupported_format", "MEDIA_START format:g722"),
    ("unsupported_format", "MEDIA_START format:slin7"),
    ("unsupported_format", '{"event": "MEDIA_START", "format": "ULAW"}'),
    ("invalid_dtmf", "DTMF_END digit:Z"),
    ("invalid_dtmf", "DTMF_END digit:55"),
    ("invalid_dtmf", "DTMF_END digit:"),
    ("invalid_dtmf", "DTMF_END channel_id:1"),
    ("invalid_dtmf", '{"event": "DTMF_END", "digit": null}'),
]


@pytest.mark.parametrize(("code", "text"), TEXT_ERRORS)
def test_text_error_codes_and_the_protocol_goes_on(code: str, text: str) -> None:
    proto = AsteriskWsProtocol(max_text_bytes=1024, max_fields=8, max_frame_bytes=4096)
    assert code_of(lambda: proto.receive_text(text)) == code
    # Nothing half-applied: still not started, and the real MEDIA_START works afterwards.
    assert proto.started is False
    assert isinstance(proto.receive_text(PLAIN_START), MediaStart)
    assert code_of(lambda: proto.receive_text(text)) in {code, "already_started"}
    assert proto.receive_text("DTMF_END digit:1") == DtmfEnd("1")
    assert proto.receive_binary(b"\x00" * 160) == Media(b"\x00" * 160)


def test_already_started_keeps_the_first_format() -> None:
    proto = started()
    assert code_of(lambda: proto.receive_text(JSON_START)) == "already_started"
    assert (proto.format, proto.encoding, proto.rate, proto.frame_bytes()) == (
        "ulaw", "mulaw", 8000, 160)
    assert proto.receive_text("MEDIA_XOFF") == MediaXoff()


def test_json_mode_follows_asterisk_even_when_the_event_is_unknown() -> None:
    proto = started()
    assert code_of(lambda: proto.receive_text('{"event": "SOMETHING_NEW"}')) == "unknown_control"
    assert proto.json_mode is True
    assert json.loads(proto.flush_media()) == {"command": "FLUSH_MEDIA"}
    # A plain line afterwards is still understood; the command format stays JSON.
    assert proto.receive_text("MEDIA_XOFF") == MediaXoff()
    assert proto.json_mode is True


def test_binary_errors_and_the_protocol_goes_on() -> None:
    proto = AsteriskWsProtocol(max_frame_bytes=1000)
    assert code_of(lambda: proto.receive_binary(b"\x00" * 160)) == "not_started"
    assert code_of(proto.frame_bytes) == "not_started"
    proto.receive_text("MEDIA_START connection_id:c channel:x format:slin16 "
                       "optimal_frame_size:640 ptime:20")
    assert code_of(lambda: proto.receive_binary(b"\x00" * 1002)) == "frame_too_large"
    assert code_of(lambda: proto.receive_binary(b"\x00" * 641)) == "partial_sample"
    assert proto.receive_binary(b"\x00" * 1000) == Media(b"\x00" * 1000)
    assert proto.receive_binary(b"") == Media(b"")
    ulaw = started()
    assert ulaw.receive_binary(b"\x7f" * 161) == Media(b"\x7f" * 161)  # odd is fine for G.711


@pytest.mark.parametrize("bad", ["", "has space", "a:b", "x" * 65, "naïve", "new\nline"])
def test_mark_and_correlation_ids_are_checked(bad: str) -> None:
    proto = started()
    assert code_of(lambda: proto.mark_media(bad)) == "invalid_mark"
    assert code_of(lambda: proto.stop_buffering(bad)) == "invalid_mark"
    assert proto.mark_media("ok") == "MARK_MEDIA ok"


def test_media_direction_is_checked() -> None:
    proto = started()
    bad: Any = "sideways"
    assert code_of(lambda: proto.set_media_direction(bad)) == "invalid_direction"


def test_absurdly_deep_json_is_invalid_not_a_crash() -> None:
    proto = AsteriskWsProtocol(max_text_bytes=64 * 1024)
    deep = '{"event": "STATUS", "x": ' + "[" * 20000 + "]" * 20000 + "}"
    assert code_of(lambda: proto.receive_text(deep)) == "invalid_control"
    assert proto.receive_text("MEDIA_XON") == MediaXon()


@pytest.mark.parametrize("kwargs", [{"max_text_bytes": 0}, {"max_frame_bytes": -1},
                                    {"max_fields": True}, {"max_fields": 1.5}])
def test_limits_must_be_positive_ints(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        AsteriskWsProtocol(**kwargs)  # type: ignore[arg-type]


def test_protocol_error_is_a_value_error_with_a_code() -> None:
    assert issubclass(AsteriskProtocolError, ValueError)  # callers may catch ValueError
    err = AsteriskProtocolError("boom", "invalid_control")
    assert (str(err), err.code) == ("boom", "invalid_control")


# --- commands -------------------------------------------------------------------------------------

COMMANDS: list[tuple[Callable[[AsteriskWsProtocol], str], str, dict[str, str]]] = [
    (lambda p: p.answer(), "ANSWER", {"command": "ANSWER"}),
    (lambda p: p.hangup(), "HANGUP", {"command": "HANGUP"}),
    (lambda p: p.flush_media(), "FLUSH_MEDIA", {"command": "FLUSH_MEDIA"}),
    (lambda p: p.mark_media("turn-3.a_b~c"), "MARK_MEDIA turn-3.a_b~c",
     {"command": "MARK_MEDIA", "correlation_id": "turn-3.a_b~c"}),
    (lambda p: p.start_buffering(), "START_MEDIA_BUFFERING", {"command": "START_MEDIA_BUFFERING"}),
    (lambda p: p.stop_buffering(), "STOP_MEDIA_BUFFERING", {"command": "STOP_MEDIA_BUFFERING"}),
    (lambda p: p.stop_buffering("61ea9311-d501"), "STOP_MEDIA_BUFFERING 61ea9311-d501",
     {"command": "STOP_MEDIA_BUFFERING", "correlation_id": "61ea9311-d501"}),
    (lambda p: p.get_status(), "GET_STATUS", {"command": "GET_STATUS"}),
    (lambda p: p.pause_media(), "PAUSE_MEDIA", {"command": "PAUSE_MEDIA"}),
    (lambda p: p.continue_media(), "CONTINUE_MEDIA", {"command": "CONTINUE_MEDIA"}),
    (lambda p: p.report_queue_drained(), "REPORT_QUEUE_DRAINED",
     {"command": "REPORT_QUEUE_DRAINED"}),
    (lambda p: p.set_media_direction("in"), "SET_MEDIA_DIRECTION in",
     {"command": "SET_MEDIA_DIRECTION", "direction": "in"}),
]


@pytest.mark.parametrize(("build", "plain", "as_json"), COMMANDS)
def test_command_encodings(build: Callable[[AsteriskWsProtocol], str], plain: str,
                           as_json: dict[str, str]) -> None:
    assert build(started(PLAIN_START)) == plain
    text = build(started(JSON_START))
    assert json.loads(text) == as_json
    assert " " not in text and "\n" not in text  # compact: one short TEXT frame
    # chan_websocket drops TEXT frames over 128 bytes; the longest id keeps us under it.
    assert len(build(started(JSON_START)).encode()) <= 128
    longest = started(JSON_START)
    assert len(longest.stop_buffering("x" * 64).encode()) <= 128
    assert len(longest.mark_media("x" * 64).encode()) <= 128


# --- nothing but AsteriskProtocolError, whatever arrives ------------------------------------------

_WORDS = ["MEDIA_START", "DTMF_END", "MEDIA_XOFF", "MEDIA_XON", "HANGUP", "MEDIA_MARK_PROCESSED",
          "STATUS", "ERROR", "MEDIA_BUFFERING_COMPLETED", "QUEUE_DRAINED", "NOPE", "x", ""]
_KEYS = ["format", "digit", "ptime", "optimal_frame_size", "channel", "correlation_id",
         "error_text", "channel_variables", "event", "k", ""]
_VALUES = ["ulaw", "slin16", "slin44", "opus", "5", "#", "Z", "0", "-1", "640", "641", "1_0",
           "99999999999", ":", "a:b", "", "\ud800", "é", "true", "null", "{", "[]"]


def _check_only_protocol_errors(proto: AsteriskWsProtocol, item: str | bytes) -> None:
    try:
        if isinstance(item, str):
            proto.receive_text(item)
        else:
            proto.receive_binary(item)
    except AsteriskProtocolError as exc:
        assert exc.code in ERROR_CODES


def _random_message(rng: random.Random) -> str | bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 700)))
    if kind == 1:
        return "".join(chr(rng.randrange(0, 0x11000)) for _ in range(rng.randrange(0, 40)))
    fields = {rng.choice(_KEYS): rng.choice(_VALUES + [rng.randrange(-5, 70000), True, None,
                                                       [1], {"a": "b"}])
              for _ in range(rng.randrange(0, 6))}
    word = rng.choice(_WORDS)
    if kind == 2:
        return json.dumps({"event": word, **fields})
    return " ".join([word, *(f"{k}:{v}" for k, v in fields.items())])


def test_seeded_fuzz_raises_only_protocol_errors() -> None:
    rng = random.Random(20251104)
    for _ in range(300):
        proto = AsteriskWsProtocol(max_text_bytes=512, max_frame_bytes=600, max_fields=4)
        for _ in range(12):
            _check_only_protocol_errors(proto, _random_message(rng))
        assert isinstance(proto.json_mode, bool) and isinstance(proto.paused, bool)


def test_hypothesis_arbitrary_input_raises_only_protocol_errors() -> None:
    hypothesis = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")

    message = st.one_of(
        st.text(max_size=200),
        st.binary(max_size=800),
        st.builds(lambda w, kv: " ".join([w, *(f"{k}:{v}" for k, v in kv)]),
                  st.sampled_from(_WORDS),
                  st.lists(st.tuples(st.sampled_from(_KEYS),
                                     st.one_of(st.sampled_from(_VALUES), st.text(max_size=8))),
                           max_size=6)),
        st.builds(lambda w, d: json.dumps({"event": w, **d}), st.sampled_from(_WORDS),
                  st.dictionaries(st.sampled_from(_KEYS),
                                  st.recursive(st.none() | st.booleans() | st.integers()
                                               | st.floats() | st.text(max_size=8),
                                               lambda inner: st.lists(inner, max_size=3)
                                               | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
                                               max_leaves=8),
                                  max_size=6)),
    )

    @hypothesis.settings(max_examples=400, deadline=None)
    @hypothesis.given(st.sampled_from([None, PLAIN_START, JSON_START]),
                      st.lists(message, max_size=10))
    def check(first: str | None, messages: list[str | bytes]) -> None:
        proto = AsteriskWsProtocol(max_text_bytes=512, max_frame_bytes=700, max_fields=8)
        if first is not None:
            proto.receive_text(first)
        for item in messages:
            _check_only_protocol_errors(proto, item)

    check()
