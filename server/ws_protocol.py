"""uvicorn's WebSocket protocol, with text frames that are not valid UTF-8 left to the app.

uvicorn decodes every text message itself; on invalid UTF-8 it logs a traceback and fails the
connection with 1007, so one hostile frame costs a stack trace in the log and the caller's
session. Here the message is decoded with `surrogateescape` instead: valid UTF-8 reads exactly as
before, and the undecodable bytes arrive as lone surrogates, which the event parser
(server/strict_json.py) refuses with an `error` event while the session goes on.

It also aborts a connection whose close cannot be delivered (a peer that stopped reading), which
uvicorn would otherwise keep open. Its keepalive waits while the server itself holds back reading
a socket (a caller sending audio faster than it is taken: the pong is behind it), and a peer that
really stops answering gets the 1011 close frame and its reason, read on until it has it, rather
than a TCP reset. A handshake header with bytes that are not UTF-8 gets the library's 400.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("kombain.ws")
ABORT_UNFLUSHED_AFTER_S = 5.0


def websocket_protocol() -> type[asyncio.Protocol] | str:
    """The `ws` argument for uvicorn.Config: our protocol, or "auto" if uvicorn's internals moved."""
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    except ImportError:
        return "auto"
    needed = ("send_receive_event_to_app", "handle_text", "handle_cont", "run_asgi", "keepalive_timeout")
    if not all(hasattr(WebSocketsSansIOProtocol, name) for name in needed):
        log.warning("uvicorn's WebSocket protocol changed; invalid UTF-8 text frames will close the connection")
        return "auto"

    class LenientTextProtocol(WebSocketsSansIOProtocol):  # type: ignore[misc, valid-type]
        """Delivers undecodable text messages as surrogate-escaped text instead of failing the socket."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # websockets refuses a malformed handshake with a text body that quotes the header; a
            # header with bytes that are not UTF-8 arrives as lone surrogates, which its reject()
            # cannot encode: the refusal raised instead of answering 400. Quote them escaped.
            reject = self.conn.reject

            def reject_quoting_safely(status: Any, text: str) -> Any:
                return reject(status, text.encode("utf-8", "backslashreplace").decode("utf-8"))

            self.conn.reject = reject_quoting_safely  # type: ignore[method-assign]

        def send_receive_event_to_app(self) -> None:
            if self.curr_msg_data_type != "text":
                super().send_receive_event_to_app()
                return
            data: Any = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
            self.frames = []
            if self.close_sent:
                return  # past websocket.close: discard, as uvicorn does
            self.queue.put_nowait({"type": "websocket.receive",
                                   "text": bytes(data).decode("utf-8", "surrogateescape")})
            if not self.read_paused:
                self.read_paused = True
                self.transport.pause_reading()

        async def run_asgi(self) -> None:
            await super().run_asgi()
            # The app is done and uvicorn has closed (or will close) the transport, which first
            # flushes what is buffered: to a peer that never reads, that is never, and the socket
            # stays open for good. Give the close a few seconds, then abort the connection.
            self.loop.call_later(ABORT_UNFLUSHED_AFTER_S, self._abort_if_stuck)

        def keepalive_timeout(self) -> None:
            if self.read_paused and not self.close_sent and not self.transport.is_closing():
                # We stopped reading this socket ourselves (the caller sends faster than the call
                # takes it): its pong is among the bytes not read yet. Not the peer's fault: wait
                # another round rather than cut off a caller that is alive.
                self.pong_timer = self.loop.call_later(self.ping_timeout or 20.0, self.keepalive_timeout)
                return
            self.pong_timer = None
            self.pending_ping_payload = None
            if self.close_sent or self.transport.is_closing():
                return
            log.info("WebSocket %s: no pong within %.0f s; closing (1011)", self.client, self.ping_timeout)
            self.conn.fail(1011, "keepalive ping timeout")
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_sent = True
            # Closing a socket with unread bytes makes the kernel send a reset, which can destroy the
            # close frame before the peer reads it: read (and drop) on for a while, as a closing
            # handshake started by the app does, so the peer gets the close and its reason.
            if self.read_paused:
                self.read_paused = False
                self.transport.resume_reading()
            self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)

        def _abort_if_stuck(self) -> None:
            transport = self.transport
            if transport.get_write_buffer_size() or not transport.is_closing():
                transport.abort()

    return LenientTextProtocol
