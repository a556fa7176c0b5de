"""What the WebSocket phone transports (Twilio, Asterisk) share: the send queue, the end of a
call (a spoken goodbye, then hang up), the peer watchdog and protocol-error bookkeeping.

A phone peer never reads an error event, so bad input is logged with the call id and counted;
past `telephony_max_protocol_errors` on one call the socket is closed with 1008.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from kombain.server.metrics import Metrics
from kombain.server.settings import Settings
from kombain.streaming.call import Call, CallEvent, HangupEvent

CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013


class SlowPeer(Exception):
    """The peer stopped reading: its send queue is full."""


class TooManyErrors(Exception):
    """The peer keeps sending what we cannot parse."""


class PhoneLink:
    """One phone WebSocket's outbound queue, watchdog and ending, shared by the phone transports."""

    def __init__(self, ws: WebSocket, settings: Settings, metrics: Metrics, transport: str,
                 log: logging.LoggerAdapter[logging.Logger]) -> None:
        self.ws, self.settings, self.metrics, self.transport, self.log = ws, settings, metrics, transport, log
        # Reply audio is paced upstream (at most ~0.5 s ahead), so a full queue means a dead reader.
        self._out: asyncio.Queue[str | bytes | None] = asyncio.Queue(maxsize=settings.send_queue_frames * 4)
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.last_media = time.monotonic()
        self.errors = 0
        self.call: Call | None = None

    def send(self, message: str | bytes) -> None:
        try:
            self._out.put_nowait(message)
        except asyncio.QueueFull:
            raise SlowPeer from None

    def end(self, reason: str) -> None:
        """Finish the call: the host's deadline or drain, the peer's stop, or the IVR's hang-up."""
        if not say_goodbye(self.call, self.settings, reason, self.log) and not self.ended.done():
            self.ended.set_result(reason)

    def on_hangup(self, ev: CallEvent) -> bool:
        """True if `ev` ends the call (the caller is handed it, the transport goes on otherwise)."""
        if isinstance(ev, HangupEvent):
            if not self.ended.done():
                self.ended.set_result(ev.reason)
            return True
        return False

    def protocol_error(self, exc: Exception, code: str) -> None:
        self.errors += 1
        self.metrics.telephony_events_total.labels(self.transport, code).inc()
        if self.errors <= 5 or self.log.isEnabledFor(logging.DEBUG):
            self.log.warning("refused a message (%s): %s", code, exc)
        if self.errors > self.settings.telephony_max_protocol_errors:
            raise TooManyErrors(f"{self.errors} malformed messages")

    async def writer(self) -> None:
        while (msg := await self._out.get()) is not None:
            if isinstance(msg, bytes):
                await self.ws.send_bytes(msg)
            else:
                await self.ws.send_text(msg)

    async def watchdog(self) -> None:
        """A phone peer streams audio all the time (silence too); none for a while means gone."""
        limit = self.settings.telephony_peer_timeout_s
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            if time.monotonic() - self.last_media > limit:
                self.log.info("no audio for %.0f s: the peer has gone", limit)
                self.end("peer_gone")
                return

    async def serve(self, call: Call, reader: Coroutine[Any, Any, str], marks_out: Callable[[], int],
                    before_close: Callable[[], None] | None = None) -> None:
        """The call's life on this socket: writer, call, watchdog and `reader` (which returns why the
        peer ended it) until either side ends; a goodbye is let play (its marks come back) first."""
        reason = "peer_gone"
        try:
            async with asyncio.TaskGroup() as tg:
                writer = tg.create_task(self.writer())
                runner = tg.create_task(call.run())
                watchdog = tg.create_task(self.watchdog())
                read = asyncio.ensure_future(reader)
                try:
                    await asyncio.wait({read, self.ended}, return_when=asyncio.FIRST_COMPLETED)
                    if read.done():
                        reason = read.result()
                    else:
                        reason = self.ended.result()
                        if reason in ("hangup", "server_shutting_down", "session_expired"):
                            await self._let_goodbye_play(marks_out)
                        if before_close is not None:
                            before_close()
                finally:
                    read.cancel()
                self.log.info("call ended: %s", reason)
                call.close()
                watchdog.cancel()
                await self.finish(writer, 1000, reason)
                runner.cancel()
        except* SlowPeer:
            self.log.warning("the peer is not reading; disconnecting")
            await close(self.ws, CLOSE_POLICY, "peer is not reading")
        except* TooManyErrors as eg:
            self.log.warning("closing: %s", eg.exceptions[0])
            await close(self.ws, CLOSE_POLICY, "too many malformed messages")
        except* WebSocketDisconnect:
            pass
        except* Exception as eg:  # one call's broken socket ends that call, never the server
            self.log.info("ended: %r", eg.exceptions[0])

    async def _let_goodbye_play(self, marks_out: Callable[[], int]) -> None:
        """Wait until the peer has played what was sent (its marks come back), or a bound."""
        bound = self.settings.response_lead_ms / 1000 + 1.5
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(bound):
                while marks_out() > 0:  # noqa: ASYNC110 - marks arrive on the reader; polling is simplest
                    await asyncio.sleep(0.05)

    async def finish(self, writer: asyncio.Task[None], close_code: int, reason: str) -> None:
        """Deliver what is queued (bounded), then close."""
        with contextlib.suppress(asyncio.QueueFull):
            self._out.put_nowait(None)
        with contextlib.suppress(TimeoutError, Exception):
            async with asyncio.timeout(2):
                await writer
        await close(self.ws, close_code, reason)


def say_goodbye(call: Call | None, settings: Settings, reason: str,
                log: logging.LoggerAdapter[logging.Logger]) -> bool:
    """A phone call the server ends (drain, deadline) hears why first. True if a goodbye was started:
    the call then emits HangupEvent once it has been said."""
    if reason not in ("server_shutting_down", "session_expired") or call is None or not call.speaks:
        return False
    goodbye = settings.shutdown_goodbye if reason == "server_shutting_down" else "This call has reached its time limit. Goodbye."
    log.info("ending the call (%s) with a spoken goodbye", reason)
    call.end(reason, goodbye=goodbye)
    return True


async def close(ws: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2):
            if ws.client_state == WebSocketState.CONNECTED:
                await ws.close(code=code, reason=reason[:120])


def call_logger(name: str, call_id: str) -> logging.LoggerAdapter[logging.Logger]:
    """A logger whose lines carry the call id."""
    return _CallLog(logging.getLogger(name), {"call_id": call_id})


class _CallLog(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"call {self.extra['call_id']}: {msg}", kwargs  # type: ignore[index]
