"""SIP over UDP with G.711 RTP: a PBX or a SIP trunk calls kombain directly.

The signalling state machine is `protocol.py` (sans I/O; messages in `message.py`, SDP
in `sdp.py`, digest auth in `auth.py`); media is `rtp.py` and `jitter.py`. This module is
the I/O around them: one UDP socket for SIP on `KOMBAIN_SIP_LISTEN` (default 127.0.0.1:5060; empty
turns it off), one UDP socket per call for RTP from `KOMBAIN_RTP_PORTS` (default 40000-40999).

A call: INVITE -> admission through the call host (486 when full, 503 while draining or loading)
-> codec choice (PCMU/PCMA, 488 otherwise) -> 100/180/200 with the SDP answer. Received RTP goes
through the jitter buffer and is played out every 20 ms (losses concealed, silence when the
caller sends none) into the call; RFC 4733 events and SIP INFO are key presses. Replies leave as
timestamp-paced RTP to where the caller's packets come from (symmetric RTP). A re-INVITE to
hold pauses sending. The IVR's hang-up, a drain or the session deadline end with a BYE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import replace
from typing import Any

import numpy as np

from kombain.server.host import CallHost, CallRefused
from kombain.server.metrics import Metrics
from kombain.server.peers import PeerAllowList
from kombain.server.services import Services
from kombain.server.settings import Settings
from kombain.server.transports.link import CallLink, call_logger
from kombain.server.transports.options import apply_options
from kombain.server.transports.sip.auth import DigestAuth
from kombain.server.transports.sip.jitter import JitterBuffer, conceal
from kombain.server.transports.sip.message import SipError, parse_message, response_for, serialize
from kombain.server.transports.sip.protocol import (
    Action,
    CallEnded,
    CallEstablished,
    IncomingCall,
    InfoDtmf,
    Reoffer,
    Send,
    SipServerProtocol,
)
from kombain.server.transports.sip.rtp import DtmfReceiver, RtpError, RtpStream, parse_rtp
from kombain.server.transports.sip.sdp import (
    SdpError,
    SdpOffer,
    answer_direction,
    build_answer,
    choose_codec,
)
from kombain.streaming.audio import alaw_decode, alaw_encode, mulaw_decode, mulaw_encode
from kombain.streaming.call import Call, CallError
from kombain.streaming.output import MAX_QUEUED_S, PacedOutput

log = logging.getLogger("kombain.sip")

RATE = 8000
FRAME = 160  # 20 ms of G.711


def parse_hostport(value: str, default_port: int) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, default_port
    return host.strip("[]") or "127.0.0.1", int(port)


def parse_port_range(value: str) -> range:
    lo, _, hi = value.partition("-")
    first, last = int(lo), int(hi or lo)
    if not 1024 <= first <= last <= 65535:
        raise ValueError(f"KOMBAIN_RTP_PORTS {value!r} must be a range within 1024-65535")
    return range(first - first % 2, last + 1, 2)  # RTP on even ports, as RFC 3550 suggests


def parse_users(value: str) -> dict[str, str]:
    users = {}
    for item in value.split(","):
        name, sep, password = item.strip().partition(":")
        if name and sep:
            users[name] = password
    return users


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Any) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %r", exc)


class SipServer:
    """The SIP listener, its timers and its calls."""

    def __init__(self, settings: Settings, metrics: Metrics, host: CallHost, services: Services) -> None:
        self.settings, self.metrics, self.host, self.services = settings, metrics, host, services
        self.listen = parse_hostport(settings.sip_listen, 5060)
        # The address peers reach us at (SDP c=, Contact): a wildcard listen address cannot be it.
        self.advertise = settings.sip_advertise or self.listen[0]
        if self.advertise in ("0.0.0.0", "::", ""):
            raise ValueError("KOMBAIN_SIP_LISTEN is a wildcard address: set KOMBAIN_SIP_ADVERTISE to the address "
                             "callers reach this node at (it goes into SDP answers and Contact headers)")
        self.ports = parse_port_range(settings.rtp_ports)
        self.allow = PeerAllowList(settings.sip_allow, "sip_allow")
        users = parse_users(settings.sip_users)
        auth = DigestAuth(users, settings.sip_realm) if users else None
        self.protocol = SipServerProtocol(local_host=self.advertise, local_port=self.listen[1], auth=auth,
                                          max_calls=max(1, settings.max_sessions * 4))
        self.transport: asyncio.DatagramTransport | None = None
        self.calls: dict[str, SipCall] = {}
        self._used_ports: set[int] = set()
        self._kick = asyncio.Event()
        self._timer_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self._datagram),
                                                                local_addr=self.listen)
        sock = self.transport.get_extra_info("sockname")
        if self.listen[1] == 0:  # an ephemeral port (tests): tell the state machine the real one
            self.listen = (sock[0], sock[1])
            self.protocol.local_port = sock[1]
            self.protocol.contact = f"<sip:kombain@{self.advertise}:{sock[1]}>"
        self._timer_task = asyncio.create_task(self._timers(), name="sip-timers")
        log.info("SIP listening on udp %s:%d, RTP ports %d-%d", *self.listen, self.ports.start, self.ports.stop - 1)

    async def aclose(self) -> None:
        for call in list(self.calls.values()):
            call.end("server_shutdown")
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._timer_task is not None:
            self._timer_task.cancel()
        if self.transport is not None:
            self.transport.close()

    # --- signalling --------------------------------------------------------------------------------

    def _datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.allow.allows(str(addr[0])):
            self._forbid(data, addr)
            return
        self.protocol.unavailable = self.host.draining or self.host.full or not self.host.ready
        try:
            self.perform(self.protocol.datagram_received(data, addr))
        except Exception:  # the state machine promises not to raise; the listener must not die if it does
            log.exception("SIP datagram from %s:%d could not be handled", *addr)

    def _forbid(self, data: bytes, addr: tuple[str, int]) -> None:
        """A source outside KOMBAIN_SIP_ALLOW: 403 to its requests (not ACK), nothing else."""
        with contextlib.suppress(SipError):
            msg = parse_message(data)
            if msg.is_request and msg.method != "ACK" and self.transport is not None:
                self.transport.sendto(serialize(response_for(msg, 403, "Forbidden", to_tag=None)), addr)
        log.info("SIP from %s:%d refused (KOMBAIN_SIP_ALLOW)", *addr)

    def perform(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                if self.transport is not None:
                    self.transport.sendto(a.data, a.addr)
            elif isinstance(a, IncomingCall):
                self._incoming(a)
            elif isinstance(a, CallEstablished):
                call = self.calls.get(a.call_id)
                if call is not None:
                    call.established.set()
            elif isinstance(a, CallEnded):
                call = self.calls.get(a.call_id)
                if call is not None:
                    call.sip_ended(a.reason)
            elif isinstance(a, Reoffer):
                call = self.calls.get(a.call_id)
                if call is not None:
                    self.perform(call.reoffer(a.offer))
            elif isinstance(a, InfoDtmf):
                call = self.calls.get(a.call_id)
                if call is not None:
                    call.digit(a.digit)
        self._kick.set()

    async def _timers(self) -> None:
        while True:
            self._kick.clear()
            deadline = self.protocol.next_deadline()
            if deadline is None:
                await self._kick.wait()
                continue
            wait = deadline - time.monotonic()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._kick.wait()
                continue
            try:
                self.perform(self.protocol.timer(time.monotonic()))
            except Exception:
                log.exception("SIP timer failed")

    def _incoming(self, ic: IncomingCall) -> None:
        try:
            self.host.admit("sip")
        except CallRefused as exc:
            log.info("refusing call %s: %s", ic.call_id, exc)
            self.perform(self.protocol.reject(ic.call_id, *_refusal(exc), retry_after=exc.retry_after_s))
            return
        try:
            pt, codec = choose_codec(ic.offer)
        except SdpError as exc:
            self.perform(self.protocol.reject(ic.call_id, exc.status if exc.status >= 400 else 488,
                                              "Not Acceptable Here"))
            return
        port = self._allocate_port()
        if port is None:
            self.perform(self.protocol.reject(ic.call_id, 503, "Service Unavailable", retry_after=5))
            return
        call = SipCall(self, ic, port, pt, codec)
        self.calls[ic.call_id] = call
        task = asyncio.create_task(call.run(), name=f"sip-{ic.call_id[:16]}")
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self.calls.pop(ic.call_id, None)
            self._used_ports.discard(call.port)

        task.add_done_callback(done)

    def _allocate_port(self) -> int | None:
        for port in self.ports:
            if port not in self._used_ports:
                self._used_ports.add(port)
                return port
        return None

    def release_port_later(self, port: int) -> None:
        """A port some other process holds: leave it marked for a while, then try it again."""
        asyncio.get_running_loop().call_later(30, self._used_ports.discard, port)


class RtpOutput(PacedOutput):
    """Replies as G.711 RTP packets, one per 20 ms, to the caller's current address."""

    def __init__(self, call: SipCall) -> None:
        super().__init__(RATE)
        self.sip_call = call

    def send_frame(self, pcm: bytes) -> None:
        c = self.sip_call
        if c.rtp is None or c.remote is None or c.on_hold:
            return
        samples = np.frombuffer(pcm, "<i2")
        payload = mulaw_encode(samples) if c.codec == "PCMU" else alaw_encode(samples)
        c.rtp.sendto(c.stream.packet(payload, len(samples), marker=c.talkspurt_start), c.remote)
        c.talkspurt_start = False
        c.packets_sent += 1


class SipCall(CallLink):
    """One SIP call: its RTP socket, jitter buffer, play-out and the call it feeds."""

    def __init__(self, server: SipServer, ic: IncomingCall, port: int, pt: int, codec: str) -> None:
        self.call_id = "call_" + secrets.token_hex(10)
        super().__init__(server.host, "sip", call_logger("kombain.sip", self.call_id),
                         peer_timeout_s=server.settings.telephony_peer_timeout_s, playout_s=MAX_QUEUED_S)
        self.server, self.ic, self.port, self.pt, self.codec = server, ic, port, pt, codec
        self.offer: SdpOffer = ic.offer
        self.remote: tuple[str, int] | None = (ic.offer.address, ic.offer.port) if ic.offer.port else None
        self.on_hold = ic.offer.on_hold
        self.rtp: asyncio.DatagramTransport | None = None
        self.stream = RtpStream(pt)
        self.talkspurt_start = True
        self.jitter = JitterBuffer(payload_type=pt)
        self.dtmf = DtmfReceiver(ic.offer.telephone_event)
        self.established = asyncio.Event()
        self.port_out = RtpOutput(self)
        self.packets_sent = 0
        self._reported = {"received": 0, "sent": 0, "lost": 0, "late": 0}  # already in the metrics
        self.session_version = 1
        self.session_id = secrets.randbelow(2**31)
        self._sip_gone = False
        self.ssrc: int | None = None

    # --- from signalling ---------------------------------------------------------------------------

    def sip_ended(self, reason: str) -> None:
        """BYE or CANCEL from the caller, our BYE done, or no ACK: the dialog is over."""
        self._sip_gone = True
        self.finish(reason)

    def reoffer(self, offer: SdpOffer) -> list[Action]:
        self.offer = offer
        self.on_hold = offer.on_hold
        self.heard()  # a long silent hold is not a vanished caller
        self.ssrc = None  # the stream may restart after a re-INVITE
        if offer.port and offer.address not in ("0.0.0.0", "::"):
            self.remote = (offer.address, offer.port)
        self.session_version += 1
        self.log.info("re-INVITE: %s", "hold" if self.on_hold else "resume")
        answer = build_answer(offer, address=self.server.advertise, port=self.port, codec_pt=self.pt,
                              session_id=self.session_id, version=self.session_version,
                              direction=answer_direction(offer))
        return self.server.protocol.accept_reoffer(self.ic.call_id, answer)

    def digit(self, digit: str) -> None:
        if self.call is not None:
            try:
                self.call.push_dtmf(digit)
            except CallError as exc:
                self.log.warning("bad digit: %s", exc)

    # --- media ---------------------------------------------------------------------------------------

    def _rtp_in(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            pkt = parse_rtp(data)
        except RtpError as exc:
            if exc.code != "rtcp":  # RTCP on a muxed port is normal traffic (its reports go unused)
                self.server.metrics.telephony_events_total.labels("sip", "invalid_rtp").inc()
            return
        if self.ssrc is None:
            self.ssrc = pkt.ssrc
        elif pkt.ssrc != self.ssrc and addr != self.remote:
            return  # another sender on our port: the caller's stream is the one it started with
        self.heard()
        self.jitter.push(pkt)  # it plays only our codec, but counts every packet of the stream
        if pkt.payload_type == self.offer.telephone_event:
            digit = self.dtmf.feed(pkt)
            if digit is not None:
                self.digit(digit)
            return
        if pkt.payload_type == self.pt:
            self.remote = addr  # symmetric RTP: answer where the caller's media comes from

    async def _playout(self, call: Call) -> None:
        """Every 20 ms, the next frame from the jitter buffer into the call: concealed when lost,
        silence when the caller sends nothing (turns still end)."""
        decode = mulaw_decode if self.codec == "PCMU" else alaw_decode
        codec = "mulaw" if self.codec == "PCMU" else "alaw"
        silence = np.zeros(FRAME, np.float32)
        previous: bytes | None = None
        next_at = time.monotonic()
        while True:
            frame = self.jitter.pop()
            if frame is None and self.jitter.ready:
                frame = conceal(previous, FRAME, codec)  # a lost packet
            if frame is not None and not self.on_hold:  # music on hold is not the caller speaking
                previous = frame
                call.push_audio(decode(frame).astype(np.float32) / 32768, RATE)
            else:
                call.push_audio(silence, RATE)
            next_at += 0.02
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.2:  # the loop fell behind (a stall): do not burst to catch up
                next_at = time.monotonic()

    def _report_rtp(self) -> None:
        """Add this call's RTP counts since the last report to the metrics (each second, and at the end)."""
        stats = self.jitter.stats
        now = {"received": stats.received, "sent": self.packets_sent, "lost": stats.lost, "late": stats.late}
        for kind, value in now.items():
            if value > self._reported[kind]:
                self.server.metrics.rtp_packets_total.labels(kind).inc(value - self._reported[kind])
                self._reported[kind] = value

    # --- the call's life -------------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        server = self.server
        for _attempt in range(16):  # a port another process holds is skipped
            try:
                self.rtp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self._rtp_in),
                                                                  local_addr=(server.listen[0], self.port))
                break
            except OSError:
                taken, self.port = self.port, server._allocate_port() or 0
                server.release_port_later(taken)
                if not self.port:
                    break
        if self.rtp is None:
            self.log.warning("no free RTP port")
            server.perform(server.protocol.reject(self.ic.call_id, 503, "Service Unavailable", retry_after=1))
            return
        host = server.host
        config, responder = apply_options(self.settings, server.services.ivr_script, host.default_config(),
                                          dict(self.ic.options), self.log)
        port = self.port_out
        try:
            async with self.open(replace(config, output_rate=RATE), output=port, responder=responder,
                                 call_id=self.call_id) as call:
                answer = build_answer(self.offer, address=server.advertise, port=self.port, codec_pt=self.pt,
                                      session_id=self.session_id, version=self.session_version)
                server.perform(server.protocol.ringing(self.ic.call_id))
                if self.settings.sip_answer_delay_ms > 0:
                    with contextlib.suppress(TimeoutError):  # a CANCEL while ringing ends it here
                        await asyncio.wait_for(asyncio.shield(self.ended),
                                               self.settings.sip_answer_delay_ms / 1000)
                    if self.ended.done():
                        self.log.info("call ended while ringing (%s)", self.ended.result())
                        if not self._sip_gone:  # draining: the INVITE still needs its answer
                            server.perform(server.protocol.reject(self.ic.call_id, 503, "Service Unavailable",
                                                                  retry_after=5))
                        return
                server.perform(server.protocol.accept(self.ic.call_id, answer))
                self.log.info("answered %s from %s:%d (%s, RTP %d)", self.ic.from_uri, *self.ic.source,
                              self.codec, self.port)
                await self.serve(call)
        except CallRefused as exc:  # the last slot went to another call since the INVITE was admitted
            server.perform(server.protocol.reject(self.ic.call_id, *_refusal(exc), retry_after=exc.retry_after_s))
        finally:
            self._report_rtp()
            stats = self.jitter.stats
            self.log.info("RTP: %d received, %d lost, %d late, %d duplicates, %d sent", stats.received,
                          stats.lost, stats.late, stats.duplicates, self.packets_sent)
            if self.rtp is not None:
                self.rtp.close()

    # --- the lifecycle's hooks -----------------------------------------------------------------------

    def tasks(self, call: Call) -> list[Any]:
        return [self._playout(call), self.port_out.pace()]

    def tick(self) -> None:
        self._report_rtp()

    def peer_may_be_silent(self) -> bool:
        return self.on_hold  # music on hold may send nothing

    async def wait_for_playout(self) -> None:
        if self._sip_gone:
            return
        await super().wait_for_playout()  # the goodbye is heard before the BYE
        await self._sleep(0.2)

    async def hang_up(self, reason: str, by_peer: bool) -> None:
        if not self._sip_gone:
            self.server.perform(self.server.protocol.hangup(self.ic.call_id))


def _refusal(exc: CallRefused) -> tuple[int, str]:
    """The SIP answer to a refused call: 486 when the node is full, 503 while draining or loading."""
    return (486, "Busy Here") if exc.code == "server_full" else (503, "Service Unavailable")


async def start(state: Any, stack: contextlib.AsyncExitStack) -> None:
    """Bring the transport up in the app's lifespan; what it opens is closed at shutdown."""
    if not state.settings.sip_listen:
        return
    server = SipServer(state.settings, state.metrics, state.host, state.services)
    await server.start()
    stack.push_async_callback(server.aclose)
    state.services.transports.put("sip", server)
