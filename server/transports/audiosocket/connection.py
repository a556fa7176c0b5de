"""Asterisk AudioSocket: phone calls over a plain TCP stream (`AudioSocket()` / `Dial(AudioSocket/...)`).

A TCP server on `KOMBAIN_AUDIOSOCKET_LISTEN` (default 127.0.0.1:9092; empty turns it off). Asterisk
sends the call's UUID, then 20 ms frames of 16-bit linear audio and DTMF digits; replies go back
in the caller's own rate, paced in 20 ms frames, and stop at once on barge-in. A call can be set
up before Asterisk connects: `PUT /v1/telephony/audiosocket/{uuid}` with responder/voice/
language/prompt, kept for `KOMBAIN_AUDIOSOCKET_CONFIG_TTL_S`. The protocol is in
`protocol.py` (sans I/O).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid as uuidlib
from dataclasses import replace
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from kombain.server.auth import require
from kombain.server.errors import ApiError
from kombain.server.host import CallHost, CallRefused
from kombain.server.ids import new_id
from kombain.server.metrics import Metrics
from kombain.server.openapi import AUTH_ERRORS, errors
from kombain.server.peers import PeerAllowList
from kombain.server.services import Services
from kombain.server.settings import Settings
from kombain.server.transports.audiosocket.protocol import (
    Audio,
    AudioSocketError,
    AudioSocketProtocol,
    CallUuid,
    Dtmf,
    ErrorFrame,
    HangupFrame,
    audio_frame,
    error_frame,
    hangup_frame,
)
from kombain.server.transports.link import CallLink, PeerError, call_logger
from kombain.server.transports.options import apply_options
from kombain.streaming.call import Call, CallError
from kombain.streaming.output import MAX_QUEUED_S, PacedOutput

router = APIRouter(tags=["telephony"])
log = logging.getLogger("kombain.audiosocket")

_MAX_SYNTH_RATE = 48000
_WRITE_STALL_S = 5.0  # a peer that accepts nothing this long has stopped reading


class CallOptions(BaseModel):
    """Per-call settings for an AudioSocket call that has not connected yet."""

    model_config = ConfigDict(extra="forbid")
    responder: str | None = Field(None, max_length=32)
    voice: str | None = Field(None, max_length=200)
    language: str | None = Field(None, max_length=16)
    prompt: str | None = Field(None, max_length=4000)


class PendingConfigs:
    """UUID -> options, each kept for a bounded time; the registry itself is bounded."""

    def __init__(self, ttl_s: float, limit: int) -> None:
        self.ttl_s, self.limit = ttl_s, limit
        self._items: dict[str, tuple[float, dict[str, str]]] = {}

    def put(self, key: str, options: dict[str, str]) -> bool:
        self._expire()
        if key not in self._items and len(self._items) >= self.limit:
            return False
        self._items[key] = (time.monotonic() + self.ttl_s, options)
        return True

    def pop(self, key: str) -> dict[str, str]:
        self._expire()
        return self._items.pop(key, (0.0, {}))[1]

    def discard(self, key: str) -> bool:
        return self._items.pop(key, None) is not None

    def _expire(self) -> None:
        now = time.monotonic()
        for k in [k for k, (until, _) in self._items.items() if until < now]:
            del self._items[k]


class AudioSocketOutput(PacedOutput):
    """The call's audio port: replies in the caller's rate as paced 20 ms audio frames."""

    def __init__(self, writer: asyncio.StreamWriter, rate: int) -> None:
        super().__init__(rate)
        self.writer = writer

    async def send_frame(self, pcm: bytes) -> None:
        self.writer.write(audio_frame(pcm, self.rate))
        async with asyncio.timeout(_WRITE_STALL_S):  # a peer that accepts nothing has stopped reading
            await self.writer.drain()


class MalformedStream(PeerError):
    """The peer's byte stream is not AudioSocket."""

    code = "malformed_stream"

    def __init__(self, exc: AudioSocketError) -> None:
        super().__init__(str(exc))
        self.error = exc


class AudioSocketServer:
    """The TCP listener and its calls."""

    def __init__(self, settings: Settings, metrics: Metrics, host: CallHost, services: Services) -> None:
        self.settings, self.metrics, self.host, self.services = settings, metrics, host, services
        self.pending = PendingConfigs(settings.audiosocket_config_ttl_s, settings.audiosocket_max_configs)
        self.allow = PeerAllowList(settings.audiosocket_allow, "audiosocket_allow")
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.address: tuple[str, int] | None = None

    async def start(self) -> None:
        hostport = self.settings.audiosocket_listen
        host, _, port = hostport.rpartition(":")
        self._server = await asyncio.start_server(self._accept, host.strip("[]") or "127.0.0.1", int(port))
        sock = self._server.sockets[0].getsockname()
        self.address = (sock[0], sock[1])
        log.info("AudioSocket listening on %s:%d", *self.address)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            peer = writer.get_extra_info("peername")
            if not self.allow.allows(str(peer[0]) if peer else ""):
                log.warning("AudioSocket peer %s refused (KOMBAIN_AUDIOSOCKET_ALLOW)", peer)
                writer.write(error_frame())
                return
            await AudioSocketConnection(self, reader, writer).run()
        except Exception:  # one connection's failure never reaches the listener
            log.exception("AudioSocket connection failed")
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class AudioSocketConnection(CallLink):
    """One Asterisk call over AudioSocket."""

    def __init__(self, server: AudioSocketServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.call_id = new_id("call")
        super().__init__(server.host, "audiosocket", call_logger("kombain.audiosocket", self.call_id),
                         peer_timeout_s=server.settings.telephony_peer_timeout_s, playout_s=MAX_QUEUED_S)
        self.server, self.reader, self.writer = server, reader, writer
        self.proto = AudioSocketProtocol()
        self.port: AudioSocketOutput | None = None

    async def run(self) -> None:
        try:
            first = await self._await_uuid()
        except (TimeoutError, AudioSocketError) as exc:
            self.log.info("no valid UUID (%s); closing", exc)
            self._refuse_stream(exc)
            return
        if first is None:
            return
        uuid, early = first
        options = self.server.pending.pop(uuid)
        self.log.info("AudioSocket call %s from %s", uuid, self.writer.get_extra_info("peername"))
        host = self.server.host
        config, responder = apply_options(self.settings, self.server.services.ivr_script,
                                          host.default_config(), options, self.log)
        rate = self.proto.rate or 8000
        port = self.port = AudioSocketOutput(self.writer, rate)
        try:
            async with self.open(replace(config, output_rate=min(rate, _MAX_SYNTH_RATE)), output=port,
                                 responder=responder, call_id=self.call_id) as call:
                for ev in early:
                    self._handle(ev, call, port)
                await self.serve(call)
        except CallRefused as exc:
            self.log.info("refused: %s", exc)
            self.writer.write(hangup_frame())

    def _refuse_stream(self, exc: Exception) -> None:
        self.server.metrics.telephony_events_total.labels("audiosocket", getattr(exc, "code", "timeout")).inc()
        with contextlib.suppress(Exception):
            self.writer.write(error_frame(0))

    async def _await_uuid(self) -> tuple[str, list[Any]] | None:
        async with asyncio.timeout(self.settings.telephony_start_timeout_s):
            while True:
                data = await self.reader.read(8192)
                if not data:
                    return None
                events = self.proto.feed(data)
                for i, ev in enumerate(events):
                    if isinstance(ev, CallUuid):
                        return ev.uuid, events[i + 1:]
                    if isinstance(ev, HangupFrame):
                        return None

    # --- the lifecycle's hooks -----------------------------------------------------------------------

    def tasks(self, call: Call) -> list[Any]:
        assert self.port is not None
        return [self.port.pace()]

    async def read(self, call: Call) -> str:
        assert self.port is not None
        while True:
            data = await self.reader.read(8192)
            if not data:
                return "peer_disconnected"
            try:
                events = self.proto.feed(data)
            except AudioSocketError as exc:
                raise MalformedStream(exc) from exc
            for ev in events:
                if isinstance(ev, HangupFrame):
                    return "peer_hangup"
                self._handle(ev, call, self.port)
            await call.paced()  # a caller far ahead of real time is read more slowly

    async def hang_up(self, reason: str, by_peer: bool) -> None:
        if by_peer:
            return
        self.writer.write(hangup_frame())
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self.writer.drain()

    async def refuse(self, exc: PeerError) -> None:
        self.log.warning("closing on a malformed stream: %s", exc)
        self._refuse_stream(exc.error if isinstance(exc, MalformedStream) else exc)

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, (ConnectionError, TimeoutError)):
            self.log.info("connection lost: %r", exc)
        else:
            self.log.warning("ended on an error: %r", exc)

    def _handle(self, ev: Any, call: Call, port: AudioSocketOutput) -> None:
        if isinstance(ev, Audio):
            self.heard()
            if ev.rate != port.rate:  # the caller's format changed: answer in it
                port.set_rate(ev.rate)
                call.update(replace(call.config, output_rate=min(ev.rate, _MAX_SYNTH_RATE)))
            call.push_audio(np.frombuffer(ev.pcm, "<i2").astype(np.float32) / 32768, ev.rate)
        elif isinstance(ev, Dtmf):
            try:
                call.push_dtmf(ev.digit)
            except CallError as exc:
                self.log.warning("bad digit: %s", exc)
        elif isinstance(ev, ErrorFrame):
            self.log.warning("Asterisk reports an error: %s (0x%02x)", ev.name, ev.code)


@router.put("/v1/telephony/audiosocket/{call_uuid}", status_code=204, dependencies=[Depends(require("voice"))],
             responses=errors(*AUTH_ERRORS, 400, 404))
async def configure_call(call_uuid: str, options: CallOptions, request: Request) -> Response:
    """Set a call's options before Asterisk connects with this UUID (kept for a bounded time)."""
    try:
        key = str(uuidlib.UUID(call_uuid))
    except ValueError:
        raise ApiError(400, f"{call_uuid[:64]!r} is not a UUID", "invalid_value", "call_uuid") from None
    server: AudioSocketServer | None = request.app.state.kombain.services.transports.get("audiosocket", AudioSocketServer)
    if server is None:
        raise ApiError(404, "AudioSocket is not enabled on this node (KOMBAIN_AUDIOSOCKET_LISTEN)", "not_found")
    values = {k: v for k, v in options.model_dump().items() if v}
    if not server.pending.put(key, values):
        raise ApiError(429, f"too many calls configured and not yet connected ({server.pending.limit})",
                       "rate_limit_exceeded", headers={"Retry-After": "5"})
    return Response(status_code=204)


@router.delete("/v1/telephony/audiosocket/{call_uuid}", status_code=204, dependencies=[Depends(require("voice"))],
                responses=errors(*AUTH_ERRORS, 400, 404))
async def forget_call(call_uuid: str, request: Request) -> Response:
    """Drop a configuration that will not be used."""
    server: AudioSocketServer | None = request.app.state.kombain.services.transports.get("audiosocket", AudioSocketServer)
    try:
        key = str(uuidlib.UUID(call_uuid))
    except ValueError:
        raise ApiError(400, f"{call_uuid[:64]!r} is not a UUID", "invalid_value", "call_uuid") from None
    if server is None or not server.pending.discard(key):
        raise ApiError(404, "no configuration for that call", "not_found", "call_uuid")
    return Response(status_code=204)


async def start(state: Any, stack: contextlib.AsyncExitStack) -> None:
    """Bring the transport up in the app's lifespan; what it opens is closed at shutdown."""
    if not state.settings.audiosocket_listen:
        return
    server = AudioSocketServer(state.settings, state.metrics, state.host, state.services)
    await server.start()
    stack.push_async_callback(server.aclose)
    state.services.transports.put("audiosocket", server)
