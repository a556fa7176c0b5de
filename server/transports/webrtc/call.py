"""One WebRTC call: a peer connection joined to a call (opened by the call host), and what it owns.

Audio from the caller's track goes to `call.push_audio`; reply audio leaves through a
`ReplyAudioTrack` (the call's audio output, which also reports the send position); server events
(the OpenAI Realtime protocol, via `RealtimeSession`) travel on the `oai-events` data channel
through a bounded queue. The call ends on hang-up (either side), a failed or closed
connection, ICE/DTLS that never connects, or a peer that stops sending media; `run()` then
releases every resource before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc import exceptions as aiortc_exceptions
from aiortc.mediastreams import MediaStreamError

from kombain.server.host import CallHost, CallRefused
from kombain.server.ids import new_id
from kombain.server.metrics import Metrics
from kombain.server.settings import Settings
from kombain.server.transports.link import SERVER_ENDS, CallLink, call_logger
from kombain.server.transports.openai_realtime.protocol import (
    ProtocolError,
    error_event,
    parse_event,
)
from kombain.server.transports.openai_realtime.session import RealtimeSession
from kombain.server.transports.webrtc.buffer_events import OutputBufferEvents
from kombain.server.transports.webrtc.media import ReplyAudioTrack, frame_to_mono
from kombain.server.transports.webrtc.sdp import SdpError
from kombain.streaming.call import Call, CallEvent
from kombain.streaming.conversation import ResponseFinished

if TYPE_CHECKING:
    from kombain.streaming.responders import Responder

log = logging.getLogger("kombain.webrtc")

DATA_CHANNEL_LABEL = "oai-events"  # what OpenAI's WebRTC clients open
_MAX_CHANNEL_BUFFER = 1024 * 1024  # bytes queued in SCTP before the client counts as too slow

_EARLY_MESSAGES = 64  # data-channel messages kept until the call has started


class WebRTCCall:
    """Create, `answer(offer)`, then `run()` for the call's life; `end(reason)` from anywhere."""

    def __init__(self, settings: Settings, metrics: Metrics, ice_servers: list[RTCIceServer],
                 *, kind: str = "realtime", events: bool = True, responder: Responder | None = None) -> None:
        self.id = new_id("rtc")
        self._responder = responder  # None: the node's default (KOMBAIN_RESPONDER)
        self.settings, self.metrics = settings, metrics
        self.created_at = time.monotonic()
        self.connected_at: float | None = None
        self.reason: str | None = None
        self.track = ReplyAudioTrack(settings.webrtc_send_buffer_ms)
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers))
        self._events = events  # False: the offer has no data channel, so events have nowhere to go
        self._out: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=settings.send_queue_frames)
        self._channel: RTCDataChannel | None = None
        self._channel_open = asyncio.Event()
        self._connected = asyncio.Event()
        self._ended = asyncio.Event()
        self._closed = asyncio.Event()
        self._remote_tracks: list[MediaStreamTrack] = []
        self._early: list[str | bytes] = []
        self._link: _RtcLink | None = None  # the call's lifecycle, once the host has opened it
        self.session = RealtimeSession(settings, metrics, self._send, kind=kind, on_hangup=self.end)
        self._buffer = OutputBufferEvents(self._send)  # output_audio_buffer.started/stopped/cleared
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    # --- set-up ----------------------------------------------------------------------------------

    async def answer(self, offer_sdp: str) -> str:
        """Apply the offer and return the answer SDP (host candidates included; no trickle)."""
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except aiortc_exceptions.OperationError as exc:  # no codec in common (e.g. opus at 16 kHz)
            raise SdpError(f"the offer could not be applied: {exc}", "unsupported_codec") from None
        except (ValueError, AssertionError, KeyError, IndexError, aiortc_exceptions.InternalError,
                aiortc_exceptions.InvalidAccessError, aiortc_exceptions.InvalidStateError) as exc:
            raise SdpError(f"the offer could not be applied: {exc or type(exc).__name__}") from None
        except Exception as exc:  # an offer sdp.check_offer let through that aiortc still trips on
            log.warning("offer refused by aiortc: %s: %s", type(exc).__name__, exc)
            raise SdpError(f"the offer could not be applied: {type(exc).__name__}") from None
        if not self._remote_tracks:
            raise SdpError("the offer has no audio the server can receive", "no_audio")
        self.pc.addTrack(self.track)  # reuses the offer's audio transceiver, now sendrecv
        try:
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except Exception as exc:  # aiortc's answer fails on a half-applied offer (a 500 before)
            log.warning("no answer to an offer: %s: %s", type(exc).__name__, exc)
            raise SdpError(f"no answer can be made to this offer: {type(exc).__name__}") from None
        return self.pc.localDescription.sdp

    async def discard(self) -> None:
        """Close the peer connection of an offer that failed: aiortc's close raises on a half-built
        one (after the error that failed the offer, a second traceback); nothing may escape it."""
        self.track.stop()
        try:
            async with asyncio.timeout(2):
                await self.pc.close()
        except Exception as exc:
            log.debug("closing a half-built peer connection: %s: %s", type(exc).__name__, exc)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and not self._remote_tracks:
            self._remote_tracks.append(track)

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != DATA_CHANNEL_LABEL or self._channel is not None:
            return
        self._channel = channel
        channel.on("message", self._on_message)
        if channel.readyState == "open":
            self._channel_open.set()
        channel.on("open", self._channel_open.set)

    def _on_state(self) -> None:
        state = self.pc.connectionState
        log.info("call %s: connection %s", self.id, state)
        if state == "connected" and self.connected_at is None:
            self.connected_at = time.monotonic()
            if self._link is not None:
                self._link.heard()
            self.metrics.webrtc_setup_seconds.observe(self.connected_at - self.created_at)
            self._connected.set()
        elif state in ("failed", "closed"):
            self.end(f"connection_{state}")

    # --- events both ways ------------------------------------------------------------------------

    def _on_message(self, message: str | bytes) -> None:
        if self.session._call is None:  # the data channel opened before the call started
            if len(self._early) < _EARLY_MESSAGES:
                self._early.append(message)
            return
        if isinstance(message, bytes):
            self.session.handle_audio_bytes(message)
            return
        try:
            event = parse_event(message, self.settings.max_message_bytes)
        except ProtocolError as exc:
            self.session.send_error(str(exc), exc.code, exc.param, exc.event_id)
            return
        self.session.handle_event(event)

    def _on_call_event(self, ev: CallEvent) -> None:
        self.session.on_call_event(ev)
        if isinstance(ev, ResponseFinished):
            self._buffer.finished(ev.response_id, ev.status, ev.audio_sent_ms)

    def _playback(self, call: Call) -> Callable[[str, int, bool], None]:
        """The track's playback reports go to the call and make the output_audio_buffer events."""
        def report(response_id: str, position_ms: int, interrupted: bool) -> None:
            call.playback(response_id, position_ms, interrupted)
            self._buffer.played(response_id, position_ms, interrupted)
        return report

    def _send(self, event: dict[str, Any]) -> None:
        if not self._events or self._ended.is_set():
            return
        try:
            self._out.put_nowait(event)
        except asyncio.QueueFull:
            self.end("client_too_slow")

    async def _writer(self) -> None:
        while True:
            event = await self._out.get()
            await self._channel_open.wait()
            channel = self._channel
            if channel is None or channel.readyState != "open":
                self._events = False  # the caller closed its channel; the call goes on without events
                return
            if channel.bufferedAmount > _MAX_CHANNEL_BUFFER:
                self.end("client_too_slow")
                return
            channel.send(json.dumps(event))

    # --- media -----------------------------------------------------------------------------------

    async def _reader(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if self._link is not None:
                self._link.heard()
            if not isinstance(frame, av.AudioFrame):
                continue
            self.session.call.push_audio(frame_to_mono(frame), frame.sample_rate)

    async def _connect_deadline(self) -> None:
        try:
            async with asyncio.timeout(self.settings.webrtc_connect_timeout_s):
                await self._connected.wait()
        except TimeoutError:
            self.end("connect_timeout")

    # --- lifetime --------------------------------------------------------------------------------

    def end(self, reason: str) -> None:
        """Ask the call to end (the first reason is kept); `run()` does the releasing."""
        if self._link is not None:
            self._link.finish(reason)
        elif self.reason is None:
            self.reason = reason

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def run(self, host: CallHost) -> None:
        """The call's life: returns once everything it held is released."""
        link = None
        try:
            link = self._link = _RtcLink(self, host)
            if self.reason is not None:  # ended before it started
                link.finish(self.reason)
            config = self.session.call_config(host.default_config())
            async with link.open(config, emit=self._on_call_event, output=self.track,
                                 responder=self._responder, call_id=self.session.id) as call:
                self.session.attach(call)
                self.track.bind(self._playback(call))
                self.session.start()
                early, self._early = self._early, []
                for message in early:
                    self._on_message(message)
                await link.serve(call)
        except CallRefused as exc:
            self.end(exc.code)
        finally:
            self._ended.set()
            if link is not None:
                self.reason = link.reason or (link.ended.result() if link.ended.done() else None) or self.reason
            self.track.stop()
            await self.pc.close()
            self.metrics.webrtc_calls_ended.labels(self.reason or "unknown").inc()
            log.info("call %s ended: %s", self.id, self.reason)
            self._closed.set()


class _RtcLink(CallLink):
    """A WebRTC call's lifecycle: media and events come in by callbacks; the data channel's writer,
    the connect deadline and the track readers run beside the call; a call the server ends hears
    why as an error event (there is no spoken goodbye on a realtime call)."""

    spoken_goodbye = False
    watch_tick_s = 0.5

    def __init__(self, rtc: WebRTCCall, host: CallHost) -> None:
        s = rtc.settings
        super().__init__(host, "webrtc", call_logger("kombain.webrtc", rtc.id), peer_timeout_s=s.webrtc_peer_timeout_s,
                         playout_s=s.webrtc_send_buffer_ms / 1000 + 1)
        self.rtc = rtc

    def tasks(self, call: Call) -> list[Any]:
        rtc = self.rtc
        return [rtc._writer(), rtc._connect_deadline(), *(rtc._reader(t) for t in rtc._remote_tracks)]

    def peer_may_be_silent(self) -> bool:
        # aiortc notices a vanished peer only after ~30 s of failed consent checks; a connected caller
        # always sends audio (silence included), so only then does no media mean gone.
        return self.rtc.connected_at is None

    async def hang_up(self, reason: str, by_peer: bool) -> None:
        if reason in SERVER_ENDS:  # the host ends the call (drain, deadline): say why, then hang up
            message = {"server_shutting_down": "the server is shutting down; call again to reach another node",
                       "session_expired": "the session reached its maximum duration"}[reason]
            self.rtc._send(error_event(message, reason, type_="server_error"))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    while not self.rtc._out.empty():  # noqa: ASYNC110 - the writer drains it
                        await asyncio.sleep(0.02)
                    await asyncio.sleep(0.1)  # let SCTP send the last event

    def failed(self, exc: BaseException) -> None:
        self.log.warning("failed: %r", exc)
