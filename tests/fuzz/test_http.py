"""Hostile HTTP input against a live server: schemathesis over /openapi.json, hand-written fuzzing
of the endpoints that read their body themselves (no request schema), memory after a flood of
bad requests, and decompression bombs on /v1/audio/transcriptions."""

from __future__ import annotations

import io
import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import LiveServer, start_server, stop_server
from tests.fuzz.strategies import json_values

# Fast to start and to answer: no lane worker processes, short TTS inputs, image requests that
# give up at once instead of waiting 10 minutes for a worker that will never come.
SERVER_ENV = {"KOMBAIN_LANE_WORKERS": "0", "KOMBAIN_TTS_MAX_CHARS": "40",
              "KOMBAIN_LANE_IMAGE_TIMEOUT_S": "0.5", "KOMBAIN_LOG_LEVEL": "warning"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = start_server(tmp_path_factory.mktemp("fuzz-server"), SERVER_ENV)
    yield srv
    stop_server(srv)
    assert "Traceback" not in srv.log(), srv.log()[-5000:]


def assert_openai_error(status: int, body: bytes, where: str) -> None:
    """A 4xx body is {"error": {"message": str, "type": str, "param": ..., "code": ...}}."""
    try:
        doc = json.loads(body)
    except ValueError:
        raise AssertionError(f"{where}: {status} body is not JSON: {body[:200]!r}") from None
    err = doc.get("error") if isinstance(doc, dict) else None
    assert isinstance(err, dict), f"{where}: {status} body has no 'error' object: {body[:200]!r}"
    assert isinstance(err.get("message"), str) and isinstance(err.get("type"), str), f"{where}: {err}"
    assert "param" in err and "code" in err, f"{where}: {err}"


@schemathesis.check
def openai_error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    if 400 <= response.status_code < 500:
        assert_openai_error(response.status_code, response.content, case.operation.label)
    return None


# Deliberate "not now / not here" answers: a lane with no model configured or no worker (its
# long poll ends in a gateway timeout), a busy or loading server. Never a 500.
EXPECTED_5XX = {(503, "model_not_configured"), (503, "lane_unavailable"), (504, "timeout"),
                (503, "server_not_ready"), (503, "server_busy")}


def expected_5xx(status: int, body: bytes) -> bool:
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return False
    return (status, code) in EXPECTED_5XX


@schemathesis.check
def no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    if expected_5xx(response.status_code, response.content):
        return None
    return not_a_server_error(ctx, response, case)


def test_openapi_operations(server: LiveServer) -> None:
    """Every operation in /openapi.json, positive and negative cases (schemathesis strategies
    driven by hypothesis here: its pytest plugin does not load under pytest 9). Every answer must be
    one the document lists for that operation, with the media type and schema it lists."""
    api = schemathesis.openapi.from_url(server.url + "/openapi.json")
    checks = [no_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
              openai_error_shape]
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) > 10
    for op in operations:
        cases = st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE))

        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=cases)
        def check(case: Any) -> None:
            case.call_and_validate(base_url=server.url, checks=checks, timeout=15)

        check()


# Endpoints whose handler reads the raw body, so /openapi.json declares no request schema for
# them and schemathesis only sends empty bodies: fuzz them by hand.
RAW_BODY = [("POST", "/v1/realtime/calls"), ("POST", "/v1/audio/transcriptions"),
            ("POST", "/v1/images/generations"), ("POST", "/v1/videos"),
            ("POST", "/v1/telephony/twilio/twiml"), ("POST", "/v1/audio/speech"),
            ("PUT", "/v1/telephony/audiosocket/0b0e0f10-1112-4314-9516-17181a1b1c1d")]
CONTENT_TYPES = ["application/json", "multipart/form-data; boundary=xyz", "multipart/form-data",
                 "application/x-www-form-urlencoded", "application/sdp", "text/plain", "", "audio/wav",
                 "multipart/form-data; boundary=" + "b" * 300]


def _multipart(fields: dict[str, str], file: bytes | None, boundary: str = "xyz") -> bytes:
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    if file is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
                     f"Content-Type: audio/wav\r\n\r\n".encode() + file + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),
    st.builds(_multipart, st.dictionaries(st.sampled_from(["model", "response_format", "language", "prompt",
                                                           "stream", "sdp", "session"]),
                                          st.text(max_size=20), max_size=4),
              st.none() | st.binary(max_size=200)),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4).map(lambda d: json.dumps(d).encode()),
)


def test_raw_body_endpoints(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, timeout=15) as client:

        @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
        @given(route=st.sampled_from(RAW_BODY), body=bodies, ctype=st.sampled_from(CONTENT_TYPES))
        def check(route: tuple[str, str], body: bytes, ctype: str) -> None:
            method, path = route
            headers = {"Content-Type": ctype} if ctype else {}
            resp = client.request(method, path, content=body, headers=headers)
            where = f"{method} {path} [{ctype}] {body[:80]!r}"
            ok_5xx = expected_5xx(resp.status_code, resp.content)
            assert resp.status_code < 500 or ok_5xx, f"{where}: {resp.status_code} {resp.text[:300]}"
            if 400 <= resp.status_code < 500:
                assert_openai_error(resp.status_code, resp.content, where)

        check()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def wav(rate: int, data: bytes, bits: int = 8) -> bytes:
    align = bits // 8
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * align, align, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def flac_silence(seconds: int, rate: int = 8000) -> bytes:
    """A small FLAC file of silence that decodes to `seconds` of audio."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as container:
        stream = container.add_stream("flac", rate=rate, layout="mono")
        n = rate * 60
        for i in range(seconds // 60):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, n), np.int16), format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, i * n
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def test_memory_back_after_flood_of_bad_requests(server: LiveServer) -> None:
    pid = server.proc.pid
    junk = bytes(range(256)) * 1024  # 256 KiB that is no audio format
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/v1/audio/transcriptions", {"files": {"file": ("a.wav", junk)}, "data": {"model": "whisper-1"}}),
        ("POST", "/v1/audio/transcriptions", {"files": {"file": ("a.wav", wav(1, junk[:4096]))}}),
        ("POST", "/v1/audio/transcriptions", {"content": b"--x\r\n" + junk,
                                              "headers": {"Content-Type": "multipart/form-data; boundary=x"}}),
        ("POST", "/v1/audio/speech", {"content": b'{"input": ' + b"[" * 5000 + b"}"}),
        ("POST", "/v1/audio/speech", {"json": {"model": "tts-1", "voice": ["x"], "input": 5}}),
        ("POST", "/v1/realtime/calls", {"content": junk[:65536], "headers": {"Content-Type": "application/sdp"}}),
        ("POST", "/v1/images/generations", {"content": b'{"prompt": "' + b"\\ud800" * 20000 + b'"}'}),
        ("PUT", "/v1/telephony/audiosocket/not-a-uuid", {"content": b"{" * 10000}),
    ]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        def flood(rounds: int) -> None:
            for _ in range(rounds):
                for method, path, kwargs in requests:
                    resp = client.request(method, path, **kwargs)
                    assert 400 <= resp.status_code < 500, (path, resp.status_code, resp.text[:200])
                    assert_openai_error(resp.status_code, resp.content, path)

        flood(3)  # warm-up: allocator arenas, lazily built parsers
        before = rss_kib(pid)
        start = time.monotonic()
        flood(300 // len(requests) + 1)
        took = time.monotonic() - start
        after = rss_kib(pid)
        assert after - before < 150 * 1024, f"RSS grew {(after - before) / 1024:.0f} MB over the flood"
        assert client.get("/healthz").status_code == 200
    print(f"flood of ~300 bad requests: {took:.1f} s, RSS {before // 1024} -> {after // 1024} MB")


def test_decompression_bombs_get_4xx_quickly(server: LiveServer) -> None:
    bombs = {
        "1 Hz WAV (4 KiB -> 68 min)": wav(1, b"\x80" * 4096),
        "5 h FLAC of silence": flac_silence(5 * 3600),
        "WAV claiming 4 GiB": wav(8000, b"\x80" * 1024)[:40] + struct.pack("<I", 2**32 - 1) + b"\x80" * 1024,
    }
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for name, data in bombs.items():
            start = time.monotonic()
            resp = client.post("/v1/audio/transcriptions", files={"file": ("a", data)}, data={"model": "whisper-1"})
            took = time.monotonic() - start
            if name.startswith("WAV claiming"):
                assert resp.status_code < 500, (name, resp.status_code, resp.text)  # decodes what is there
            else:
                assert resp.status_code == 400, (name, resp.status_code, resp.text[:200])
                assert_openai_error(400, resp.content, name)
            assert took < 3.0, f"{name}: {took:.1f} s"
