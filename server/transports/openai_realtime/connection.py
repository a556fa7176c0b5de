"""`/v1/realtime` over WebSocket: the OpenAI Realtime protocol, plus raw PCM16 binary frames.

Three tasks per connection in one TaskGroup: the reader (client events -> session), the writer
(a bounded queue of server events -> socket) and the session's own work (decodes). A client that
stops reading fills the queue and is disconnected instead of growing memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from kombain.server.auth import Principal, authorize_websocket, deny_websocket
from kombain.server.host import CallHost, CallRefused
from kombain.server.quotas import OverLimit
from kombain.server.transports.openai_realtime.protocol import (
    ProtocolError,
    apply_session_update,
    error_event,
    parse_event,
)
from kombain.server.transports.openai_realtime.session import RealtimeSession

router = APIRouter()
log = logging.getLogger("kombain.ws")

_CLOSE_TRY_AGAIN = 1013
_CLOSE_POLICY = 1008


class _SlowClient(Exception):
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

    out: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=settings.send_queue_frames)

    def send(event: dict[str, Any]) -> None:
        try:
            out.put_nowait(event)
        except asyncio.QueueFull:
            raise _SlowClient from None

    ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def end(reason: str) -> None:
        if not ended.done():
            ended.set_result(reason)

    session = RealtimeSession(settings, state.metrics, send, kind=kind, on_hangup=end)
    if principal.session is not None:  # a client secret's session, checked when it was minted
        with contextlib.suppress(ProtocolError):
            session.config = apply_session_update(session.config, principal.session, "session.update")
    try:
        async with host.open_call("websocket", session.call_config(host.default_config()), session.on_call_event,
                                  output=session.audio_output(), end=end, call_id=session.id) as call:
            session.attach(call)
            session.start()
            await _pump(ws, session, out, settings.max_message_bytes, ended, settings.idle_timeout_s, end)
    except CallRefused as exc:
        await _close(ws, exc.code, str(exc), _CLOSE_TRY_AGAIN)


class _Activity:
    """When the client last sent anything (an event, valid or not, or audio)."""

    def __init__(self) -> None:
        self.last = time.monotonic()


async def _pump(ws: WebSocket, session: RealtimeSession, out: asyncio.Queue[dict[str, Any] | None],
                max_bytes: int, ended: asyncio.Future[str], idle_s: float, end: Callable[[str], None]) -> None:
    activity = _Activity()
    try:
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(_writer(ws, out))
            runner = tg.create_task(session.call.run())
            watchdog = tg.create_task(_idle_watchdog(session, activity, idle_s, end)) if idle_s > 0 else None
            reader = asyncio.ensure_future(_reader(ws, session, max_bytes, activity))
            try:
                waiting: set[asyncio.Future[Any]] = {reader, ended}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if not reader.done():  # the server ends the call: deliver what is queued, then close
                    reader.cancel()
                    reason = ended.result()
                    if reason != "hangup":  # drain, deadline, idle: say why before closing
                        message, close_code, type_ = _END_REASONS.get(reason, (reason, 1000, "server_error"))
                        if reason == "idle_timeout":
                            message = message.format(idle_s)
                        with contextlib.suppress(asyncio.QueueFull):
                            out.put_nowait(error_event(message, reason, type_=type_))
                    else:
                        message, close_code = "the call was ended by the server", 1000
                    with contextlib.suppress(asyncio.QueueFull):
                        out.put_nowait(None)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(2):
                            await writer
                    await _close_only(ws, close_code, message)
                else:
                    reader.result()
            finally:
                reader.cancel()
            # The client is gone: nothing left to deliver to.
            session.call.close()
            runner.cancel()
            writer.cancel()
            if watchdog is not None:
                watchdog.cancel()
    except* _SlowClient:
        log.warning("session %s: client is not reading; disconnecting", session.id)
        await _close(ws, "client_too_slow", "client is not reading events fast enough", _CLOSE_POLICY)
    except* WebSocketDisconnect:
        pass
    except* Exception as eg:  # a broken socket mid-send; the session ends, the server goes on
        log.info("session %s ended: %r", session.id, eg.exceptions[0])


_END_REASONS = {
    "server_shutting_down": ("the server is shutting down; reconnect to another node", _CLOSE_GOING_AWAY,
                             "server_error"),
    "session_expired": ("the session reached its maximum duration", 1000, "server_error"),
    "idle_timeout": ("no event or audio from the client for {:g} s (KOMBAIN_IDLE_TIMEOUT_S); closing the session",
                     1000, "invalid_request_error"),
}


async def _idle_watchdog(session: RealtimeSession, activity: _Activity, idle_s: float,
                         end: Callable[[str], None]) -> None:
    """End the session once the client has sent nothing for `idle_s`; a turn or a reply in
    progress counts as activity (a client may listen to a long answer without sending)."""
    while True:
        left = activity.last + idle_s - time.monotonic()
        if left > 0:
            await asyncio.sleep(left)
        elif session.call.busy:
            activity.last = time.monotonic()
        else:
            log.info("session %s: idle for %.0f s; closing", session.id, idle_s)
            end("idle_timeout")
            return


async def _reader(ws: WebSocket, session: RealtimeSession, max_bytes: int, activity: _Activity) -> None:
    # A client may send audio and commands before it has read session.created: handle none
    # of them before the call runs (audio alone would be kept, a commit would find it missing).
    await session.call.started.wait()
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return
        activity.last = time.monotonic()
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


async def _writer(ws: WebSocket, out: asyncio.Queue[dict[str, Any] | None]) -> None:
    while (event := await out.get()) is not None:
        await ws.send_text(json.dumps(event))


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
