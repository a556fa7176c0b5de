"""WebSocket keepalive against a server with a fast ping (0.2 s): a caller whose pong waits behind
audio the server is reading slowly on purpose is not cut off; a peer that never answers is told
why with a close frame (1011, "keepalive ping timeout"), not a TCP reset. Raw sockets, so the
client answers pings only when the test says so."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from collections.abc import Iterator

import pytest
import websockets.sync.client

from tests.conftest import LiveServer, start_server, stop_server

AUDIO_100MS = bytes(24000 * 2 // 10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = start_server(tmp_path_factory.mktemp("keepalive"), {
        "KOMBAIN_WS_PING_INTERVAL_S": "0.2", "KOMBAIN_WS_PING_TIMEOUT_S": "0.2",
        # Audio past a 1 s burst is read at 10x real time: 30 s sent at once take ~3 s to read.
        "KOMBAIN_MAX_AUDIO_SPEED": "10", "KOMBAIN_MAX_AUDIO_BURST_S": "1", "KOMBAIN_LOG_LEVEL": "warning"})
    yield srv
    stop_server(srv)
    assert "Traceback" not in srv.log(), srv.log()[-3000:]


def test_flooding_caller_that_answers_pings_is_not_cut_off(server: LiveServer) -> None:
    with websockets.sync.client.connect(server.ws_url + "/v1/realtime", max_size=2**24) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "session.created"
        for _ in range(300):  # 30 s of audio as fast as the socket takes it
            ws.send(AUDIO_100MS)
        ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime"}}))
        while (event := json.loads(ws.recv(timeout=30)))["type"] != "session.updated":
            assert event["type"] != "error", event


def _handshake(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(f"GET /v1/realtime HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
              f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def _masked(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    size = bytes([0x80 | n]) if n < 126 else struct.pack("!BH", 0x80 | 126, n) if n < 65536 else struct.pack("!BQ", 0x80 | 127, n)
    return bytes([0x80 | opcode]) + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _frames_until_close(s: socket.socket) -> tuple[int, str]:
    """Read server frames (never answering pings) until a close frame: (code, reason)."""
    s.settimeout(15)
    buf = b""

    def need(n: int) -> bytes:
        nonlocal buf
        while len(buf) < n:
            data = s.recv(65536)  # a reset raises ConnectionResetError: the test fails there
            assert data, "connection ended without a close frame"
            buf += data
        out, buf = buf[:n], buf[n:]
        return out

    while True:
        b0, b1 = need(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", need(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", need(8))[0]
        payload = need(n)
        if b0 & 0x0F == 0x8:
            return struct.unpack("!H", payload[:2])[0], payload[2:].decode()


def test_peer_that_never_answers_pings_gets_a_close_with_its_reason(server: LiveServer) -> None:
    with _handshake(server.port) as s:
        assert _frames_until_close(s) == (1011, "keepalive ping timeout")


def test_flooding_peer_that_never_answers_gets_the_close_not_a_reset(server: LiveServer) -> None:
    """Its audio is read slowly, so the server holds unread bytes of it when the keepalive gives
    up: closing then would reset the connection and lose the close frame."""
    with _handshake(server.port) as s:
        frame = _masked(0x2, AUDIO_100MS)
        s.sendall(frame * 200)  # 20 s of audio, then silence on the wire
        assert _frames_until_close(s) == (1011, "keepalive ping timeout")
