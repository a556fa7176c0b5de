"""What the WebSocket phone transports (Twilio, Asterisk) share on top of the call lifecycle
(`link.CallLink`): the bounded send queue and its writer, protocol-error bookkeeping, and the
close of the socket at the end of a call.

A phone peer never reads an error event, so bad input is logged with the call id and counted;
past `telephony_max_protocol_errors` on one call the socket is closed with 1008.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from kombain.server.host import CallHost
from kombain.server.transports.link import CallLink, PeerError, SlowPeer, TooManyErrors, call_logger
from kombain.streaming.call import Call

CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013

__all__ = ["CLOSE_POLICY", "CLOSE_TRY_AGAIN", "PhoneLink", "SlowPeer", "TooManyErrors", "call_logger", "close"]


class PhoneLink(CallLink):
    """One phone WebSocket: its outbound queue and writer, its protocol errors and its close.
    Subclasses read their protocol (`read`) and may send a last message (`farewell`)."""

    def __init__(self, ws: WebSocket, host: CallHost, transport: str,
                 log: logging.LoggerAdapter[logging.Logger], **kw: Any) -> None:
        super().__init__(host, transport, log, peer_timeout_s=host.settings.telephony_peer_timeout_s, **kw)
        self.ws, self.metrics = ws, host.metrics
        # Reply audio is paced upstream (at most ~0.5 s ahead), so a full queue means a dead reader.
        self._out: asyncio.Queue[str | bytes | None] = asyncio.Queue(maxsize=self.settings.send_queue_frames * 4)
        self.errors = 0
        self._writer: asyncio.Task[None] | None = None

    def send(self, message: str | bytes) -> None:
        try:
            self._out.put_nowait(message)
        except asyncio.QueueFull:
            raise SlowPeer("the peer is not reading") from None

    def protocol_error(self, exc: Exception, code: str) -> None:
        self.errors += 1
        self.metrics.telephony_events_total.labels(self.transport, code).inc()
        if self.errors <= 5 or self.log.isEnabledFor(logging.DEBUG):
            self.log.warning("refused a message (%s): %s", code, exc)
        if self.errors > self.settings.telephony_max_protocol_errors:
            raise TooManyErrors(f"{self.errors} malformed messages")

    def farewell(self) -> None:
        """What to send when the server ends the call (before the socket closes)."""

    # --- the lifecycle's hooks ---------------------------------------------------------------------

    def tasks(self, call: Call) -> list[Any]:
        return [self._write()]

    async def _write(self) -> None:
        self._writer = asyncio.current_task()
        while (msg := await self._out.get()) is not None:
            if isinstance(msg, bytes):
                await self.ws.send_bytes(msg)
            else:
                await self.ws.send_text(msg)

    async def hang_up(self, reason: str, by_peer: bool) -> None:
        if not by_peer:
            self.farewell()
        # Deliver what is queued (bounded), then close.
        with contextlib.suppress(asyncio.QueueFull):
            self._out.put_nowait(None)
        if self._writer is not None:
            with contextlib.suppress(TimeoutError, Exception):
                async with asyncio.timeout(2):
                    await self._writer
        await close(self.ws, 1000, reason)

    async def refuse(self, exc: PeerError) -> None:
        if isinstance(exc, SlowPeer):
            self.log.warning("the peer is not reading; disconnecting")
            await close(self.ws, CLOSE_POLICY, "peer is not reading")
        else:
            self.log.warning("closing: %s", exc)
            await close(self.ws, CLOSE_POLICY, "too many malformed messages")

    def failed(self, exc: BaseException) -> None:
        if not isinstance(exc, WebSocketDisconnect):
            self.log.info("ended: %r", exc)


async def close(ws: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2):
            if ws.client_state == WebSocketState.CONNECTED:
                await ws.close(code=code, reason=reason[:120])
