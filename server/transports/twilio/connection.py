"""Twilio Media Streams: phone calls over a bidirectional `<Connect><Stream>` WebSocket.

`WS /v1/telephony/twilio` carries the call (mu-law 8 kHz both ways, marks as playback reports,
`clear` on barge-in, digits); `GET|POST /v1/telephony/twilio/twiml` is the voice webhook that
points a Twilio number at it. With `KOMBAIN_TWILIO_AUTH_TOKEN` set, both check
`X-Twilio-Signature`. The protocol itself is in `protocol.py` (sans I/O).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode, urlsplit

import numpy as np
from fastapi import APIRouter, Request, Response, WebSocket
from starlette.websockets import WebSocketDisconnect

from kombain.server.auth import authorize_websocket, deny_websocket
from kombain.server.errors import ApiError
from kombain.server.host import CallHost, CallRefused
from kombain.server.ids import new_id
from kombain.server.openapi import errors
from kombain.server.quotas import OverLimit
from kombain.server.settings import Settings
from kombain.server.transports.options import apply_options
from kombain.server.transports.phone import (
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN,
    PhoneLink,
    TooManyErrors,
    call_logger,
    close,
)
from kombain.server.transports.twilio.protocol import (
    TwilioDtmf,
    TwilioMark,
    TwilioMedia,
    TwilioProtocolError,
    TwilioStart,
    TwilioStop,
    TwilioStreamProtocol,
    connect_stream_twiml,
    valid_twilio_signature,
)
from kombain.streaming.audio import mulaw_decode, mulaw_encode
from kombain.streaming.call import Call, CallError
from kombain.streaming.output import MarkedOutput

router = APIRouter(tags=["telephony"])

STREAM_PATH = "/v1/telephony/twilio"
RATE = 8000
_OPTION_KEYS = ("responder", "voice", "language", "prompt")


class TwilioOutput(MarkedOutput):
    """The call's audio port on a Twilio stream: mu-law media as written, a mark after each chunk
    (Twilio echoes it once everything before it has played: the playback report), `clear` on
    barge-in. Twilio cannot pause its buffer: a hold keeps what is written here until released."""

    def __init__(self, proto: TwilioStreamProtocol, link: PhoneLink) -> None:
        super().__init__(RATE, None)
        self.proto, self.link = proto, link

    def send_frame(self, pcm: bytes) -> None:
        self.link.send(self.proto.media(mulaw_encode(np.frombuffer(pcm, "<i2"))))

    def send_mark(self, name: str) -> None:
        self.link.send(self.proto.mark(name))

    def send_clear(self) -> None:
        self.link.send(self.proto.clear())


class TwilioLink(PhoneLink):
    """A Twilio media stream's call: its messages into the call."""

    def __init__(self, ws: WebSocket, host: CallHost, proto: TwilioStreamProtocol,
                 log: logging.LoggerAdapter[logging.Logger]) -> None:
        super().__init__(ws, host, "twilio", log)
        self.proto = proto
        self.port = TwilioOutput(proto, self)

    async def read(self, call: Call) -> str:
        """Twilio's messages into the call, until `stop` or the socket closes. Returns why it ended."""
        ws, proto = self.ws, self.proto
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return "peer_disconnected"
            try:
                ev = proto.receive(_payload(msg))
            except TwilioProtocolError as exc:
                self.protocol_error(exc, exc.code)
                await call.paced()
                continue
            if isinstance(ev, TwilioMedia):
                self.heard()
                await call.receive_audio(mulaw_decode(ev.payload).astype(np.float32) / 32768, RATE)
                continue
            if isinstance(ev, TwilioDtmf):
                try:
                    call.push_dtmf(ev.digit)
                except CallError as exc:
                    self.protocol_error(exc, exc.code)
            elif isinstance(ev, TwilioMark):
                self.port.mark_played(ev.name)
            elif isinstance(ev, TwilioStop):
                return "stop"
            await call.paced()


_TWIML_RESPONSES: dict[int | str, dict[str, Any]] = {200: {"content": {"application/xml": {}}}, **errors(400, 403)}


@router.get("/v1/telephony/twilio/twiml", responses=_TWIML_RESPONSES)
@router.post("/v1/telephony/twilio/twiml", responses=_TWIML_RESPONSES)
async def twiml(request: Request) -> Response:
    """Twilio's voice webhook: TwiML that connects the call to this node's media stream.

    Query parameters `responder`, `voice`, `language` and `prompt` are passed on to the stream
    as `<Parameter>`s (per-number set-ups: point each number at the webhook with its own)."""
    settings: Settings = request.app.state.kombain.settings
    form: dict[str, str] = {}
    if request.method == "POST":
        raw = await request.form(max_files=0, max_fields=200, max_part_size=64 * 1024)
        form = {k: v for k, v in raw.items() if isinstance(v, str)}
    if settings.twilio_auth_token:
        url = public_url(settings, request.url.scheme, request.headers, request.url.path, request.url.query)
        signature = request.headers.get("x-twilio-signature", "")
        if not valid_twilio_signature(settings.twilio_auth_token, url, form, signature):
            raise ApiError(403, "missing or invalid X-Twilio-Signature", "invalid_signature")
    # Twilio carries <Parameter> values of up to 1024 characters on the stream's start message.
    params = {k: request.query_params[k][:1024] for k in _OPTION_KEYS if request.query_params.get(k)}
    if form.get("From"):
        params["caller"] = form["From"][:64]
    ws_scheme = "wss" if _scheme(settings, request.url.scheme, request.headers) in ("https", "wss") else "ws"
    base = public_url(settings, ws_scheme, request.headers, STREAM_PATH, "")
    try:
        body = connect_stream_twiml(base, params)
    except (ValueError, TypeError) as exc:
        raise ApiError(400, f"cannot build TwiML: {exc}", "invalid_value") from None
    return Response(body, media_type="application/xml")


@router.websocket(STREAM_PATH)
async def twilio_stream(ws: WebSocket) -> None:
    state = ws.app.state.kombain
    settings: Settings = state.settings
    signed = False
    if settings.twilio_auth_token:
        url = public_url(settings, ws.url.scheme, ws.headers, ws.url.path, ws.url.query)
        signed = valid_twilio_signature(settings.twilio_auth_token, url, {}, ws.headers.get("x-twilio-signature", ""))
    release = _no_release
    if not signed and state.auth.enabled:
        # Twilio sends no headers of ours: a key or JWT comes as `?token=` on the stream URL.
        principal = await authorize_websocket(ws, "voice", query_keys=("token", "api_key"))
        if principal is None:
            return
        try:
            release = await state.quotas.open_call(principal.subject)
        except OverLimit as exc:
            await deny_websocket(ws, 429, exc.message, exc.code, {"Retry-After": str(exc.retry_after_s)})
            return
    elif not signed and settings.twilio_auth_token:
        await ws.close(code=CLOSE_POLICY, reason="missing or invalid X-Twilio-Signature")
        return
    try:
        await _stream(ws, state, settings)
    finally:
        release()


def _no_release() -> None:
    pass


async def _stream(ws: WebSocket, state: Any, settings: Settings) -> None:
    await ws.accept()
    call_id = new_id("call")
    log = call_logger("kombain.twilio", call_id)
    proto = TwilioStreamProtocol(max_message_bytes=min(settings.max_message_bytes, 256 * 1024))
    host: CallHost = state.host
    link = TwilioLink(ws, host, proto, log)
    try:
        start = await _await_start(ws, proto, link, settings.telephony_start_timeout_s)
    except (TimeoutError, TooManyErrors):
        log.info("no start message from the peer; closing")
        await close(ws, CLOSE_POLICY, "expected a Twilio 'start' message")
        return
    except WebSocketDisconnect:
        return
    if start is None:  # stopped or disconnected before it started
        await close(ws, 1000, "stream stopped")
        return
    log.info("stream %s of Twilio call %s started", start.stream_sid, start.call_sid)
    config, responder = apply_options(settings, state.services.ivr_script, host.default_config(),
                                      start.custom_parameters, log)
    try:
        async with link.open(replace(config, output_rate=RATE), output=link.port, responder=responder,
                             call_id=call_id) as call:
            await link.serve(call)
    except CallRefused as exc:
        log.info("refused: %s", exc)
        await close(ws, CLOSE_TRY_AGAIN, str(exc))


def _payload(msg: Mapping[str, Any]) -> str | bytes:
    """A received ASGI WebSocket message's text, or its bytes."""
    text = msg.get("text")
    return text if isinstance(text, str) else msg.get("bytes") or b""


async def _await_start(ws: WebSocket, proto: TwilioStreamProtocol, link: PhoneLink,
                       within_s: float) -> TwilioStart | None:
    async with asyncio.timeout(within_s):
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return None
            try:
                ev = proto.receive(_payload(msg))
            except TwilioProtocolError as exc:
                link.protocol_error(exc, exc.code)
                continue
            if isinstance(ev, TwilioStart):
                return ev
            if isinstance(ev, TwilioStop):
                return None


def _scheme(settings: Settings, scheme: str, headers: object) -> str:
    if settings.public_url:
        return urlsplit(settings.public_url).scheme
    forwarded = getattr(headers, "get", lambda k, d=None: d)("x-forwarded-proto")
    return (forwarded or scheme).split(",")[0].strip().lower()


def public_url(settings: Settings, scheme: str, headers: object, path: str, query: str) -> str:
    """The URL Twilio used (and signed): KOMBAIN_PUBLIC_URL's host, else the request's (behind a
    proxy, its X-Forwarded-Proto and Host)."""
    get = getattr(headers, "get", lambda k, d=None: d)
    if settings.public_url:
        parts = urlsplit(settings.public_url)
        ws_like = scheme in ("ws", "wss")
        sch = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme) if ws_like else parts.scheme
        base = f"{sch}://{parts.netloc}{parts.path.rstrip('/')}"
    else:
        sch = _scheme(settings, scheme, headers)
        if scheme in ("ws", "wss"):
            sch = {"https": "wss", "http": "ws"}.get(sch, sch)
        base = f"{sch}://{get('host') or 'localhost'}"
    return base + path + (f"?{query}" if query else "")


def twiml_query(options: dict[str, str]) -> str:
    """The webhook query string that picks per-number options (for docs and tests)."""
    return urlencode({k: v for k, v in options.items() if k in _OPTION_KEYS})
