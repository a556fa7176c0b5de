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
from kombain.server.transports.openai_realtime.protocol import (
    ProtocolError,
    error_event,
    parse_event,
)
from kombain.server.transports.openai_realtime.session import RealtimeSession
from kombain.server.transports.webrtc.media import ReplyAudioTrack, frame_to_mono
from kombain.server.transports.webrtc.sdp import SdpError

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
        self._last_media = time.monotonic()
        self._hangup = asyncio.Event()
        self._early: list[str | bytes] = []
        self._bg: asyncio.Future[None] | None = None
        self.session = RealtimeSession(settings, metrics, self._send, kind=kind, on_hangup=self._on_hangup)
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
        if not self._remote_tracks:
            raise SdpError("the offer has no audio the server can receive", "no_audio")
        self.pc.addTrack(self.track)  # reuses the offer's audio transceiver, now sendrecv
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp

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
            self._last_media = self.connected_at
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
            self._last_media = time.monotonic()
            if not isinstance(frame, av.AudioFrame):
                continue
            self.session.call.push_audio(frame_to_mono(frame), frame.sample_rate)

    async def _watchdog(self) -> None:
        try:
            async with asyncio.timeout(self.settings.webrtc_connect_timeout_s):
                await self._connected.wait()
        except TimeoutError:
            self.end("connect_timeout")
            return
        limit = self.settings.webrtc_peer_timeout_s
        while True:
            await asyncio.sleep(min(0.5, limit / 4))
            # aiortc notices a vanished peer only after ~30 s of failed consent checks; a caller
            # always sends audio (silence included), so no media for `limit` seconds means gone.
            if time.monotonic() - self._last_media > limit:
                self.end("peer_gone")
                return

    # --- lifetime --------------------------------------------------------------------------------

    def _on_hangup(self, reason: str) -> None:
        if reason != "hangup":  # the host ends the call (drain, deadline): say why, then hang up
            message = {"server_shutting_down": "the server is shutting down; call again to reach another node",
                       "session_expired": "the session reached its maximum duration"}.get(reason, reason)
            self._send(error_event(message, reason, type_="server_error"))
            self._end_after_events(reason)
            return
        self._hangup.set()

    def _end_after_events(self, reason: str) -> None:
        async def later() -> None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    while not self._out.empty():  # noqa: ASYNC110
                        await asyncio.sleep(0.02)
                    await asyncio.sleep(0.1)  # let SCTP send the last event
            self.end(reason)

        task = asyncio.ensure_future(later())
        self._bg = task  # keep a reference until it runs

    async def _hangup_watch(self) -> None:
        await self._hangup.wait()
        # The bot hung up (IVR): let the caller hear the goodbye, then end. The track is pulled
        # by its sender every 20 ms, so watching its level is simpler than signalling from it.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.webrtc_send_buffer_ms / 1000 + 1):
                while self.track.buffered_ms > 0:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        self.end("hangup")

    def end(self, reason: str) -> None:
        """Ask the call to end; `run()` does the releasing."""
        if self.reason is None:
            self.reason = reason
        self._ended.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def run(self, host: CallHost) -> None:
        """The call's life: returns once everything it held is released."""
        try:
            config = self.session.call_config(host.default_config())
            async with host.open_call("webrtc", config, self.session.on_call_event, output=self.track,
                                      end=self._on_hangup, call_id=self.session.id,
                                      responder=self._responder) as call:
                self.session.attach(call)
                self.track.on_played = call.playback
                self.session.start()
                early, self._early = self._early, []
                for message in early:
                    self._on_message(message)
                await self._run_tasks()
        except CallRefused as exc:
            self.end(exc.code)
        finally:
            self.track.stop()
            await self.pc.close()
            self.metrics.webrtc_calls_ended.labels(self.reason or "unknown").inc()
            log.info("call %s ended: %s", self.id, self.reason)
            self._closed.set()

    async def _run_tasks(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self.session.call.run()), tg.create_task(self._writer()),
                         tg.create_task(self._watchdog()), tg.create_task(self._hangup_watch())]
                tasks += [tg.create_task(self._reader(t)) for t in self._remote_tracks]
                await self._ended.wait()
                for task in tasks:
                    task.cancel()
        except* Exception as eg:  # one call's failure ends that call, never the server
            self.end("error")
            log.warning("call %s failed: %r", self.id, eg.exceptions[0])
