"""Asterisk chan_websocket: phone calls from Asterisk's WebSocket channel at `/v1/telephony/asterisk`.

Asterisk connects (websocket_client.conf), sends MEDIA_START with the channel's format, then
media as binary frames (ulaw, alaw or slinNN) and DTMF_END; we answer, send reply audio in the
same format in frames of its optimal size, honour MEDIA_XOFF/MEDIA_XON, PAUSE_MEDIA while a
possible interruption is confirmed, FLUSH_MEDIA on barge-in, MARK_MEDIA after each chunk (the
MEDIA_MARK_PROCESSED echoes are the playback reports) and HANGUP when the IVR hangs up. Query
parameters `responder`, `voice`, `language`, `prompt` choose per-call options. The protocol is in
`protocol.py` (sans I/O).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import replace
from typing import Any

import numpy as np
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from kombain.server.auth import authorize_websocket, deny_websocket
from kombain.server.host import CallHost, CallRefused
from kombain.server.ids import new_id
from kombain.server.quotas import OverLimit
from kombain.server.settings import Settings
from kombain.server.transports.asterisk_ws.protocol import (
    AsteriskProtocolError,
    AsteriskWsProtocol,
    DtmfEnd,
    ErrorReport,
    Hangup,
    MarkProcessed,
    Media,
    MediaStart,
    MediaXoff,
    MediaXon,
)
from kombain.server.transports.options import apply_options
from kombain.server.transports.phone import (
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN,
    PhoneLink,
    TooManyErrors,
    call_logger,
    close,
)
from kombain.streaming.audio import AudioFormat, alaw_encode, decode, mulaw_encode
from kombain.streaming.call import Call, CallError
from kombain.streaming.output import MarkedOutput

router = APIRouter(tags=["telephony"])

PATH = "/v1/telephony/asterisk"
_MAX_OUTPUT_RATE = 48000  # synthesis rate ceiling; higher channel rates are resampled in the port
_MAX_PAUSED_S = 5.0  # reply audio held during MEDIA_XOFF before the oldest is dropped


class AsteriskOutput(MarkedOutput):
    """The call's audio port on a chan_websocket: frames in the channel's format and its optimal
    size, MARK_MEDIA after each chunk (MEDIA_MARK_PROCESSED is the playback report), PAUSE_MEDIA /
    CONTINUE_MEDIA as a real hold, FLUSH_MEDIA on barge-in; MEDIA_XOFF holds media back here."""

    can_pause = True  # Asterisk keeps what it queued and plays silence: exactly a hold

    def __init__(self, proto: AsteriskWsProtocol, link: PhoneLink) -> None:
        assert proto.encoding is not None and proto.rate is not None
        self.encoding = proto.encoding
        width = 2 if proto.encoding == "pcm16" else 1
        super().__init__(proto.rate, proto.frame_bytes() // width / proto.rate)
        self.proto, self.link = proto, link
        self._paused: deque[str | bytes] = deque()  # what MEDIA_XOFF held back
        self._paused_bytes = 0
        self.dropped_bytes = 0

    def send_frame(self, pcm: bytes) -> None:
        if self.encoding == "mulaw":
            self._send(mulaw_encode(np.frombuffer(pcm, "<i2")))
        elif self.encoding == "alaw":
            self._send(alaw_encode(np.frombuffer(pcm, "<i2")))
        else:
            self._send(pcm)

    def send_mark(self, name: str) -> None:
        self._send(self.proto.mark_media(name))

    def send_pause(self, held: bool) -> None:
        self._send(self.proto.pause_media() if held else self.proto.continue_media(), control=True)

    def send_clear(self) -> None:
        self._paused.clear()
        self._paused_bytes = 0
        self._send(self.proto.flush_media(), control=True)

    def resume(self) -> None:
        """MEDIA_XON: send what was held back while Asterisk's queue was full."""
        while self._paused and not self.proto.paused:
            self.link.send(self._paused.popleft())
        self._paused_bytes = 0

    def _send(self, msg: str | bytes, control: bool = False) -> None:
        if self.proto.paused and not control:
            # Flow control: hold media (bounded, oldest dropped) until MEDIA_XON.
            self._paused.append(msg)
            if isinstance(msg, bytes):
                self._paused_bytes += len(msg)
            limit = int(_MAX_PAUSED_S * self.rate * (1 if self.encoding != "pcm16" else 2))
            while self._paused_bytes > limit and self._paused:
                old = self._paused.popleft()
                if isinstance(old, bytes):
                    self._paused_bytes -= len(old)
                    self.dropped_bytes += len(old)
            return
        self.link.send(msg)


class AsteriskLink(PhoneLink):
    """A chan_websocket call: its frames and commands into the call; HANGUP when we end it."""

    def __init__(self, ws: WebSocket, host: CallHost, proto: AsteriskWsProtocol,
                 log: logging.LoggerAdapter[logging.Logger]) -> None:
        super().__init__(ws, host, "asterisk", log)
        self.proto = proto
        self.port: AsteriskOutput | None = None  # once MEDIA_START has given the format

    def farewell(self) -> None:
        # Ended from our side: HANGUP, and Asterisk hangs up the channel and closes the socket.
        self.send(self.proto.hangup())

    async def read(self, call: Call) -> str:
        proto, port = self.proto, self.port
        assert proto.encoding is not None and proto.rate is not None and port is not None
        fmt = _fmt(proto.encoding)
        rate = proto.rate
        while True:
            msg = await self.ws.receive()
            if msg["type"] == "websocket.disconnect":
                return "peer_disconnected"  # how Asterisk hangs up
            try:
                data = msg.get("bytes")
                if data is not None:
                    media = proto.receive_binary(data)
                    self.heard()
                    await call.receive_audio(decode(media.data, fmt), rate)
                    continue
                ev = proto.receive_text(msg.get("text") or "")
            except AsteriskProtocolError as exc:
                self.protocol_error(exc, exc.code)
                await call.paced()
                continue
            await call.paced()
            if isinstance(ev, DtmfEnd):
                try:
                    call.push_dtmf(ev.digit)
                except CallError as exc:
                    self.protocol_error(exc, exc.code)
            elif isinstance(ev, MarkProcessed):
                port.mark_played(ev.name)
            elif isinstance(ev, MediaXon):
                port.resume()
            elif isinstance(ev, MediaXoff):
                self.log.info("MEDIA_XOFF: holding reply audio")
            elif isinstance(ev, Hangup):
                return "peer_hangup"
            elif isinstance(ev, ErrorReport):
                self.log.warning("Asterisk reports an error: %s", ev.text)
            elif isinstance(ev, Media):  # pragma: no cover - binary frames are handled above
                pass


def _fmt(encoding: str) -> AudioFormat:
    return AudioFormat(encoding, 8000) if encoding != "pcm16" else AudioFormat("pcm16", 16000)


@router.websocket(PATH)
async def asterisk_stream(ws: WebSocket) -> None:
    state = ws.app.state.kombain
    settings: Settings = state.settings
    principal = await authorize_websocket(ws, "voice")
    if principal is None:
        return
    try:
        release = await state.quotas.open_call(principal.subject)
    except OverLimit as exc:
        await deny_websocket(ws, 429, exc.message, exc.code, {"Retry-After": str(exc.retry_after_s)})
        return
    try:
        await _stream(ws, state, settings)
    finally:
        release()


async def _stream(ws: WebSocket, state: Any, settings: Settings) -> None:
    # Asterisk's websocket_client.conf may offer a subprotocol ("media"); accept it if so.
    offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    await ws.accept(subprotocol="media" if "media" in offered else None)
    call_id = new_id("call")
    log = call_logger("kombain.asterisk", call_id)
    proto = AsteriskWsProtocol(max_frame_bytes=min(settings.max_message_bytes, 64 * 1024))
    host: CallHost = state.host
    link = AsteriskLink(ws, host, proto, log)
    try:
        start = await _await_start(ws, proto, link, settings.telephony_start_timeout_s)
    except (TimeoutError, TooManyErrors):
        await close(ws, CLOSE_POLICY, "expected MEDIA_START")
        return
    except WebSocketDisconnect:
        return
    if start is None:
        return
    log.info("MEDIA_START on %s (%s, %d Hz, frame %d bytes)", start.channel, start.format, proto.rate,
             proto.frame_bytes())
    # Per-call options: the URI's query, or channel variables (JSON control format) such as
    # KOMBAIN_RESPONDER set in the dialplan before Dial(WebSocket/...).
    variables = {k.lower().removeprefix("kombain_"): v for k, v in start.variables.items()}
    options = dict(ws.query_params.items()) | variables
    config, responder = apply_options(settings, state.services.ivr_script, host.default_config(),
                                      options, log)
    assert proto.rate is not None
    synth_rate = min(proto.rate, _MAX_OUTPUT_RATE)  # higher channel rates are resampled in the port
    link.port = AsteriskOutput(proto, link)
    try:
        async with link.open(replace(config, output_rate=synth_rate), output=link.port, responder=responder,
                             call_id=call_id) as call:
            link.send(proto.answer())
            await link.serve(call)
    except CallRefused as exc:
        log.info("refused: %s", exc)
        with contextlib.suppress(Exception):
            await ws.send_text(proto.hangup())
        await close(ws, CLOSE_TRY_AGAIN, str(exc))


async def _await_start(ws: WebSocket, proto: AsteriskWsProtocol, link: PhoneLink,
                       within_s: float) -> MediaStart | None:
    async with asyncio.timeout(within_s):
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return None
            text = msg.get("text")
            if text is None:  # media before MEDIA_START
                link.protocol_error(AsteriskProtocolError("media before MEDIA_START", "not_started"), "not_started")
                continue
            try:
                ev = proto.receive_text(text)
            except AsteriskProtocolError as exc:
                link.protocol_error(exc, exc.code)
                continue
            if isinstance(ev, MediaStart):
                return ev
            if isinstance(ev, Hangup):
                return None
