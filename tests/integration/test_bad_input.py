"""Malformed and hostile input: clear errors, the session goes on, the server stays up."""

from __future__ import annotations

import asyncio
import base64
import json
import socket

import httpx
import pytest
import websockets

from tests.conftest import SPEECH_DIR, start_server, stop_server
from tests.integration.helpers import clip_pcm16, open_session

pytestmark = pytest.mark.asyncio


async def test_protocol_errors_then_the_session_still_works(live_server):
    s = await open_session(live_server.ws_url, type="transcription")
    bad = [
        "{not json",
        "[1, 2]",
        json.dumps({"no": "type"}),
        json.dumps({"type": "no.such.event"}),
        json.dumps({"type": "input_audio_buffer.append", "audio": "%%% not base64 %%%"}),
        json.dumps({"type": "input_audio_buffer.append"}),
        json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x01\x02\x03").decode()}),
        json.dumps({"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 12345}}}}}),
        json.dumps({"type": "session.update", "session": {"input_audio_format": "opus"}}),
        json.dumps({"type": "session.update", "session": {"turn_detection": {"type": "server_vad", "threshold": 7}}}),
        json.dumps({"type": "session.update", "session": "nope"}),
    ]
    for msg in bad:
        await s.ws.send(msg)
    await s.ws.send(b"\x00\x01\x02")  # odd-length binary PCM
    errors = await s.wait_for("error", len(bad) + 1)
    codes = [e["error"]["code"] for e in errors]
    assert codes[:7] == ["invalid_json", "invalid_event", "invalid_event", "unknown_event_type", "invalid_audio",
                         "invalid_value", "invalid_audio"], codes
    assert all(e["error"]["message"] for e in errors)
    # A rejected session.update leaves the format as it was: 24 kHz audio still transcribes.
    await s.append(clip_pcm16(SPEECH_DIR / "goforward.wav", 24000), 4800, speed=4.0, rate=24000)
    done = await s.wait_for("conversation.item.input_audio_transcription.completed")
    assert "forward" in done[0]["transcript"].lower()
    await s.close()


async def test_oversized_message_gets_an_error_event(live_server):
    s = await open_session(live_server.ws_url)
    big = json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (5 * 1024 * 1024)})
    await s.ws.send(big)
    err = await s.wait_for("error")
    assert err[0]["error"]["code"] == "message_too_large"
    await s.send({"type": "input_audio_buffer.clear"})
    await s.wait_for("input_audio_buffer.cleared")
    await s.close()


async def test_vanished_client_is_cleaned_up(live_server):
    """Clients that drop TCP mid-stream leave no session behind."""
    for _ in range(3):
        ws = await websockets.connect(live_server.ws_url + "/v1/realtime")
        await ws.recv()
        pcm = clip_pcm16(SPEECH_DIR / "arctic_a0007.wav", 24000)
        for i in range(0, len(pcm) // 2, 9600):
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i:i + 9600]).decode()}))
        ws.transport.abort()  # no close handshake
    async with asyncio.timeout(15):
        while True:
            metrics = httpx.get(live_server.url + "/metrics").text
            active = [ln for ln in metrics.splitlines() if ln.startswith('kombain_sessions_active{transport="websocket"}')]
            if active and float(active[0].split()[-1]) == 0:
                break
            await asyncio.sleep(0.2)
    assert httpx.get(live_server.url + "/healthz").status_code == 200


async def test_client_that_never_reads_is_disconnected(live_server):
    """Flood bad events while never reading replies: the server must drop us, not buffer forever."""
    port = live_server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(b"0123456789abcdef").decode()
    writer.write((f"GET /v1/realtime HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    await writer.drain()
    payload = b'{"type":"x"}'
    mask = b"\x01\x02\x03\x04"
    frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    dropped = False
    try:
        async with asyncio.timeout(60):
            for _ in range(400):  # bounded: at most 200k small frames
                writer.write(frame * 500)
                await writer.drain()
                await asyncio.sleep(0.005)
    except (ConnectionError, TimeoutError):
        dropped = True
    if not dropped:  # the server may have closed its side while our writes still went out
        try:
            async with asyncio.timeout(30):
                while await reader.read(65536):
                    pass
            dropped = True  # EOF: the server closed the connection
        except ConnectionError:
            dropped = True
        except TimeoutError:
            pass
    writer.close()
    assert dropped, "a client that never reads should be disconnected"
    assert "client_too_slow" in live_server.log() or "not reading" in live_server.log()
    s = await open_session(live_server.ws_url)  # and everyone else is still served
    await s.close()


async def test_session_limit_and_upload_limit(tmp_path):
    server = await asyncio.to_thread(
        start_server, tmp_path, {"KOMBAIN_MAX_SESSIONS": "1", "KOMBAIN_MAX_UPLOAD_BYTES": "20000"})
    try:
        first = await open_session(server.ws_url)
        ws2 = await websockets.connect(server.ws_url + "/v1/realtime")
        msg = json.loads(await ws2.recv())
        assert msg["type"] == "error" and msg["error"]["code"] == "server_full"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws2.recv()
        assert closed.value.rcvd.code == 1013
        assert httpx.get(server.url + "/readyz").status_code == 503  # full: a balancer should route elsewhere
        await first.close()
        await asyncio.sleep(0.3)
        assert httpx.get(server.url + "/readyz").status_code == 200
        with open(SPEECH_DIR / "arctic_a0007.wav", "rb") as f:
            r = httpx.post(server.url + "/v1/audio/transcriptions", files={"file": f}, data={"model": "whisper-1"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
    finally:
        await asyncio.to_thread(stop_server, server)
    assert "Traceback" not in server.log(), server.log()


async def test_auth_required_when_keys_are_set(tmp_path):
    server = await asyncio.to_thread(start_server, tmp_path, {"KOMBAIN_API_KEYS": "sekrit,other"})
    try:
        assert httpx.get(server.url + "/v1/models").status_code == 401
        assert httpx.get(server.url + "/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(server.url + "/v1/models", headers={"Authorization": "Bearer other"}).status_code == 200
        assert httpx.get(server.url + "/healthz").status_code == 200  # probes stay open
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(server.ws_url + "/v1/realtime")
        ws = await websockets.connect(server.ws_url + "/v1/realtime", additional_headers={"Authorization": "Bearer sekrit"})
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.close()
        ws = await websockets.connect(server.ws_url + "/v1/realtime",
                                      subprotocols=["realtime", "openai-insecure-api-key.sekrit"])
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.close()
    finally:
        await asyncio.to_thread(stop_server, server)
