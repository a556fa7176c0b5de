"""`/v1/realtime` over WebSocket: the OpenAI Realtime protocol, plus raw PCM16 binary frames.

The call's life is the shared lifecycle (`transports/link.py`): the reader (client events ->
session), the writer (a bounded queue of server events -> socket) and the session's own work
(decodes) in one TaskGroup. A client that stops reading fills the queue and is disconnected
instead of growing memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from kombain.server.auth import Principal, authorize_websocket, deny_websocket
from kombain.server.host import CallHost, CallRefused
from kombain.server.quotas import OverLimit
from kombain.server.transports.link import CallLink, PeerError, SlowPeer
from kombain.server.transports.openai_realtime.protocol import (
    ProtocolError,
    apply_session_update,
    error_event,
    parse_event,
)
from kombain.server.transports.openai_realtime.session import RealtimeSession
from kombain.streaming.call import Call

router = APIRouter()
log = logging.getLogger("kombain.ws")

_CLOSE_TRY_AGAIN = 1013
_CLOSE_POLICY = 1008


class _SlowClient(SlowPeer):
    pass


_CLOSE_GOING_AWAY = 1001


@router.websocket("/v1/realtime")
async def realtime(ws: WebSocket) -> None:
    state = ws.app.state.kombain
    subprotocols = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    # Echo the plain "realtime" subprotocol that browser clients offer next to their key.
    accept_proto = "realtime" if "realtime" in subprotocols else None
    principal = await authorize_websocket(ws, "voice", realtime=True)
    if principal is None:
        return
    try:
        release = await state.quotas.open_call(principal.subject)
    except OverLimit as exc:
        await deny_websocket(ws, 429, exc.message, exc.code, {"Retry-After": str(exc.retry_after_s)})
        return
    try:
        await ws.accept(subprotocol=accept_proto)
        await _serve(ws, state, principal)
    finally:
        release()


async def _serve(ws: WebSocket, state: Any, principal: Principal) -> None:
    settings = state.settings
    host: CallHost = state.host
    kind = "transcription" if ws.query_params.get("intent") == "transcription" else "realtime"
    link = _WsLink(ws, host)
    session = link.session = RealtimeSession(settings, state.metrics, link.send, kind=kind, on_hangup=link.finish)
    link.log = _SessionLog(log, {"id": session.id})
    if principal.session is not None:  # a client secret's session, checked when it was minted
        with contextlib.suppress(ProtocolError):
            session.config = apply_session_update(session.config, principal.session, "session.update")
    try:
        async with link.open(session.call_config(host.default_config()), emit=session.on_call_event,
                             output=session.audio_output(), call_id=session.id) as call:
            session.attach(call)
            session.start()
            await link.serve(call)
    except CallRefused as exc:
        await _close(ws, exc.code, str(exc), _CLOSE_TRY_AGAIN)


class _WsLink(CallLink):
    """A realtime WebSocket's call: the reader (client events -> session) and the writer (a bounded
    queue of server events -> socket) beside it. A client that stops reading fills the queue and
    is disconnected; one that sends nothing for KOMBAIN_IDLE_TIMEOUT_S while no turn or reply is
    under way is closed; a session the server ends is told why in an error event."""

    spoken_goodbye = False
    idle_reason = "idle_timeout"
    busy_is_activity = True  # a client may listen to a long answer without sending

    def __init__(self, ws: WebSocket, host: CallHost) -> None:
        s = host.settings
        super().__init__(host, "websocket", _SessionLog(log, {"id": "-"}), peer_timeout_s=max(0.0, s.idle_timeout_s))
        self.ws, self.max_bytes = ws, s.max_message_bytes
        self.out: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=s.send_queue_frames)
        self.session: RealtimeSession | None = None
        self._writer: asyncio.Task[None] | None = None

    def send(self, event: dict[str, Any]) -> None:
        try:
            self.out.put_nowait(event)
        except asyncio.QueueFull:
            raise _SlowClient("client is not reading events fast enough") from None

    def tasks(self, call: Call) -> list[Any]:
        return [self._write()]

    async def _write(self) -> None:
        self._writer = asyncio.current_task()
        while (event := await self.out.get()) is not None:
            await self.ws.send_text(json.dumps(event))

    async def read(self, call: Call) -> str:
        session = self.session
        assert session is not None
        # A client may send audio and commands before it has read session.created: handle none
        # of them before the call runs (audio alone would be kept, a commit would find it missing).
        await call.started.wait()
        ws, max_bytes = self.ws, self.max_bytes
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return "peer_disconnected"
            self.heard()
            text, data = msg.get("text"), msg.get("bytes")
            if data is not None:
                if len(data) > max_bytes:
                    session.send_error(f"binary frame of {len(data)} bytes exceeds {max_bytes}", "message_too_large")
                    await asyncio.sleep(0)  # a backlog of bad frames must not hold the event loop
                    continue
                await session.receive_audio_bytes(data)
                continue
            try:
                event = parse_event(text or "", max_bytes)
            except ProtocolError as exc:
                session.send_error(str(exc), exc.code, exc.param, exc.event_id)
                await asyncio.sleep(0)  # a backlog of bad frames must not hold the event loop
                continue
            await session.receive_event(event)

    async def hang_up(self, reason: str, by_peer: bool) -> None:
        if by_peer:
            return  # the client is gone: nothing left to deliver to
        if reason != "hangup":  # drain, deadline, idle: say why before closing
            message, close_code, type_ = _END_REASONS.get(reason, (reason, 1000, "server_error"))
            if reason == "idle_timeout":
                message = message.format(self.peer_timeout_s)
            with contextlib.suppress(asyncio.QueueFull):
                self.out.put_nowait(error_event(message, reason, type_=type_))
        else:
            message, close_code = "the call was ended by the server", 1000
        with contextlib.suppress(asyncio.QueueFull):
            self.out.put_nowait(None)
        if self._writer is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await self._writer
        await _close_only(self.ws, close_code, message)

    async def refuse(self, exc: PeerError) -> None:
        self.log.warning("client is not reading; disconnecting")
        await _close(self.ws, "client_too_slow", "client is not reading events fast enough", _CLOSE_POLICY)

    def failed(self, exc: BaseException) -> None:
        if not isinstance(exc, WebSocketDisconnect):  # a broken socket mid-send; the server goes on
            self.log.info("ended: %r", exc)


class _SessionLog(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"session {self.extra['id']}: {msg}", kwargs  # type: ignore[index]


_END_REASONS = {
    "server_shutting_down": ("the server is shutting down; reconnect to another node", _CLOSE_GOING_AWAY,
                             "server_error"),
    "session_expired": ("the session reached its maximum duration", 1000, "server_error"),
    "idle_timeout": ("no event or audio from the client for {:g} s (KOMBAIN_IDLE_TIMEOUT_S); closing the session",
                     1000, "invalid_request_error"),
}


async def _close_only(ws: WebSocket, close_code: int, message: str) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2):
            if ws.client_state == WebSocketState.CONNECTED:
                await ws.close(code=close_code, reason=message[:120])


async def _close(ws: WebSocket, code: str, message: str, close_code: int) -> None:
    # Bounded: a client that is not reading would otherwise hold this send forever.
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2):
            if ws.client_state == WebSocketState.CONNECTED:
                await ws.send_text(json.dumps(error_event(message, code, type_="server_error")))
                await ws.close(code=close_code, reason=message[:120])
