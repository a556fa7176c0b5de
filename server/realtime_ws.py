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
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from kombain.server.auth import websocket_authorized
from kombain.server.realtime.protocol import ProtocolError, error_event, parse_event
from kombain.server.realtime.session import RealtimeSession
from kombain.server.responders import build_responder

router = APIRouter()
log = logging.getLogger("kombain.ws")

_CLOSE_TRY_AGAIN = 1013
_CLOSE_POLICY = 1008


class _SlowClient(Exception):
    pass


@router.websocket("/v1/realtime")
async def realtime(ws: WebSocket) -> None:
    state = ws.app.state.kombain
    settings = state.settings
    subprotocols = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    # Echo the plain "realtime" subprotocol that browser clients offer next to their key.
    accept_proto = "realtime" if "realtime" in subprotocols else None
    if not websocket_authorized(ws, settings.api_key_set):
        await ws.close(code=_CLOSE_POLICY, reason="missing or invalid API key")
        return
    await ws.accept(subprotocol=accept_proto)
    if not state.ready.is_set() or state.draining:
        await _refuse(ws, "the server is not ready (loading models or draining); retry shortly", "server_not_ready")
        return
    sessions = state.services["sessions"]
    kind = "transcription" if ws.query_params.get("intent") == "transcription" else "realtime"

    out: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=settings.send_queue_frames)

    def send(event: dict[str, Any]) -> None:
        try:
            out.put_nowait(event)
        except asyncio.QueueFull:
            raise _SlowClient from None

    hangup = asyncio.Event()
    tts = state.services.get("tts") if kind == "realtime" else None
    responder = build_responder(settings, state.services.get("ivr_script")) if tts is not None else None
    session = RealtimeSession(settings, state.metrics, state.services["whisper"], state.services["vad"], send,
                              transport="websocket", kind=kind, tts=tts, responder=responder,
                              on_hangup=hangup.set)
    if not sessions.add(session.id, session):
        state.metrics.sessions_rejected.inc()
        await _refuse(ws, f"server is at its session limit ({sessions.limit}); retry later", "server_full")
        return
    m = state.metrics
    m.sessions_total.labels("websocket").inc()
    m.sessions_active.labels("websocket").inc()
    log.info("session %s opened", session.id)
    try:
        session.start()
        async with asyncio.timeout(settings.max_session_seconds):
            await _pump(ws, session, out, settings.max_message_bytes, hangup)
    except TimeoutError:
        await _close(ws, "session_expired", f"session exceeded {settings.max_session_seconds} s", 1000)
    finally:
        session.close()
        sessions.remove(session.id)
        m.sessions_active.labels("websocket").dec()
        log.info("session %s closed", session.id)


async def _pump(ws: WebSocket, session: RealtimeSession, out: asyncio.Queue[dict[str, Any] | None],
                max_bytes: int, hangup: asyncio.Event) -> None:
    try:
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(_writer(ws, out))
            runner = tg.create_task(session.run())
            reader = asyncio.ensure_future(_reader(ws, session, max_bytes))
            hung_up = asyncio.ensure_future(hangup.wait())
            try:
                await asyncio.wait({reader, hung_up}, return_when=asyncio.FIRST_COMPLETED)
                if not reader.done():  # the bot hung up (IVR): deliver what is queued, then close
                    reader.cancel()
                    out.put_nowait(None)
                    await writer
                    await _close(ws, "hangup", "the call was ended by the server", 1000)
                else:
                    reader.result()
            finally:
                reader.cancel()
                hung_up.cancel()
            # The client is gone: nothing left to deliver to.
            session.close()
            runner.cancel()
            writer.cancel()
    except* _SlowClient:
        log.warning("session %s: client is not reading; disconnecting", session.id)
        await _close(ws, "client_too_slow", "client is not reading events fast enough", _CLOSE_POLICY)
    except* WebSocketDisconnect:
        pass
    except* Exception as eg:  # a broken socket mid-send; the session ends, the server goes on
        log.info("session %s ended: %r", session.id, eg.exceptions[0])


async def _reader(ws: WebSocket, session: RealtimeSession, max_bytes: int) -> None:
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return
        text, data = msg.get("text"), msg.get("bytes")
        if data is not None:
            if len(data) > max_bytes:
                session.send_error(f"binary frame of {len(data)} bytes exceeds {max_bytes}", "message_too_large")
                continue
            session.handle_audio_bytes(data)
            continue
        try:
            event = parse_event(text or "", max_bytes)
        except ProtocolError as exc:
            session.send_error(str(exc), exc.code, exc.param, exc.event_id)
            continue
        session.handle_event(event)


async def _writer(ws: WebSocket, out: asyncio.Queue[dict[str, Any] | None]) -> None:
    while (event := await out.get()) is not None:
        await ws.send_text(json.dumps(event))


async def _refuse(ws: WebSocket, message: str, code: str) -> None:
    await _close(ws, code, message, _CLOSE_TRY_AGAIN)


async def _close(ws: WebSocket, code: str, message: str, close_code: int) -> None:
    # Bounded: a client that is not reading would otherwise hold this send forever.
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2):
            if ws.client_state == WebSocketState.CONNECTED:
                await ws.send_text(json.dumps(error_event(message, code, type_="server_error")))
                await ws.close(code=close_code, reason=message[:120])
