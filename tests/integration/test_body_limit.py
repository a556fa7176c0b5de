"""Request bodies are counted as they arrive: a chunked upload (no Content-Length) is refused with
413 once it passes the limit, not read whole first. Raw sockets, the live server's 25 MiB limit."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import LiveServer

LIMIT = 25 * 1024 * 1024 + 64 * 1024  # KOMBAIN_MAX_UPLOAD_BYTES (default) + the form allowance
PIECE = b"\0" * 65536


def chunked_upload(port: int, path: str, content_type: str, head: bytes, total: int) -> tuple[bytes, int]:
    """POST `head` and then zeros as a chunked body, up to `total` bytes, never ending it; return
    what the server answered and how many body bytes were sent before the answer came."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                  f"Content-Type: {content_type}\r\n\r\n".encode())
        s.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        sent, answer = len(head), b""
        s.setblocking(False)
        deadline = time.monotonic() + 30
        while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
            readable, writable, _ = select.select([s], [s] if sent < total else [], [], 1)
            if readable:
                try:
                    data = s.recv(65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                answer += data
            elif writable:
                try:
                    n = s.send(b"%x\r\n%s\r\n" % (len(PIECE), PIECE))
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += max(0, n - 8)
        s.setblocking(True)
        s.settimeout(10)
        try:
            while True:  # the rest of the answer (Connection: close ends it)
                data = s.recv(65536)
                if not data:
                    break
                answer += data
        except (TimeoutError, ConnectionResetError):
            pass
    return answer, sent


def _status_and_error(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head, "no answer: the body was being read whole (or the connection was reset)"
    return int(head.split()[1]), json.loads(body)["error"]


@pytest.mark.parametrize(("path", "content_type", "head"), [
    ("/v1/audio/transcriptions", "multipart/form-data; boundary=XyZ",
     b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n'),
    ("/v1/realtime/client_secrets", "application/json", b'{"session": {"instructions": "'),
])
def test_chunked_body_past_the_limit_is_refused_before_it_ends(
        live_server: LiveServer, path: str, content_type: str, head: bytes) -> None:
    # 4 MiB past the limit and then nothing: a server that reads the whole body first never answers.
    answer, sent = chunked_upload(live_server.port, path, content_type, head, LIMIT + 4 * 1024 * 1024)
    status, error = _status_and_error(answer)
    assert status == 413 and error["code"] == "request_too_large", answer[:300]
    assert b"connection: close" in answer.lower()
    assert sent > LIMIT  # what was sent got there; the answer came before the body ended
    assert httpx.get(live_server.url + "/healthz", timeout=5).status_code == 200


def test_chunked_body_under_the_limit_is_read(live_server: LiveServer) -> None:
    """The limit counts bytes; it does not refuse chunked bodies as such."""
    def body() -> Iterator[bytes]:  # a generator: httpx sends it chunked, with no Content-Length
        yield b'{"session": {"type": "realtime"}}'
    r = httpx.post(live_server.url + "/v1/realtime/client_secrets", content=body(),
                   headers={"content-type": "application/json"}, timeout=10)
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert r.status_code == 200, r.text
