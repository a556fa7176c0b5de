"""A test SIP caller: a minimal UAC over UDP with G.711 mu-law RTP, as a PBX or a softphone calls.

Written from RFC 3261 / 3264 / 3550 / 4733, independently of the server's SIP code: it sends an
INVITE with an SDP offer (PCMU 0, telephone-event 101), ACKs the 200, streams 20 ms RTP packets
at real time (silence between utterances, as a phone does; `PhoneCaller`'s send loop), sends
RFC 4733 digits, answers the server's BYE and hangs up with its own. What it hears is decoded into
`heard`; `rx` counts the server's packets (seq gaps = lost, out of order, and timestamp jumps
without a seq gap: gaps the server itself left in its stream). `loss` and `jitter_ms` impair what
it sends, as `tc netem` would (seeded: runs repeat).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kombain.clients.phone_callers import FRAME, RATE, PhoneCaller, _mulaw_decode, _mulaw_encode

T1 = 0.5  # RFC 3261 timer T1: first retransmission interval of a request over UDP
MAX_SIP_BYTES = 16384  # a datagram larger than this is not a SIP message we read
MAX_RTP_BYTES = 1500
PCMU, TELEPHONE_EVENT = 0, 101
DTMF_CODES = "0123456789*#ABCD"  # RFC 4733 event code = index
_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
            "c": "content-type"}


class SipCallFailed(Exception):
    """The INVITE got a final error response (`status`), or none in time (status 0)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}".strip())
        self.status = status


# --- SIP messages (sans I/O) -------------------------------------------------------------------------


@dataclass
class SipMessage:
    """A parsed SIP message: a request (`method`, `uri`) or a response (`status`, `reason`)."""

    method: str = ""
    uri: str = ""
    status: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)  # lower-case full names
    body: bytes = b""

    def get(self, name: str) -> str:
        return next((v for k, v in self.headers if k == name), "")

    @property
    def cseq(self) -> tuple[int, str]:
        number, _, method = self.get("cseq").partition(" ")
        return int(number or 0), method.strip()


def parse_sip(data: bytes) -> SipMessage:
    """Parse one datagram; ValueError when it is too large or malformed."""
    if len(data) > MAX_SIP_BYTES:
        raise ValueError(f"SIP message of {len(data)} bytes")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("no blank line after the headers")
    lines = head.decode("utf-8", "replace").split("\r\n")
    first = lines[0].split(" ", 2)
    if len(first) < 3:
        raise ValueError(f"bad start line {lines[0][:80]!r}")
    msg = SipMessage()
    if first[0] == "SIP/2.0":
        msg.status, msg.reason = int(first[1]), first[2]
    else:
        msg.method, msg.uri = first[0], first[1]
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError(f"bad header line {line[:80]!r}")
        key = name.strip().lower()
        msg.headers.append((_COMPACT.get(key, key), value.strip()))
    length = int(msg.get("content-length") or len(body))
    msg.body = body[:length]
    return msg


def build_sip(start: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [start, *(f"{k}: {v}" for k, v in headers), f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body


def uri_of(header: str) -> str:
    """The URI of a name-addr (`"x" <sip:a@b>;tag=1` -> `sip:a@b`) or of a bare addr-spec."""
    if "<" in header:
        return header[header.index("<") + 1:header.index(">")]
    return header.split(";", 1)[0].strip()


def sdp_offer(address: str, port: int, session_id: int) -> bytes:
    return (f"v=0\r\no=kombain-caller {session_id} 1 IN IP4 {address}\r\ns=-\r\nc=IN IP4 {address}\r\n"
            f"t=0 0\r\nm=audio {port} RTP/AVP {PCMU} {TELEPHONE_EVENT}\r\na=rtpmap:0 PCMU/8000\r\n"
            f"a=rtpmap:{TELEPHONE_EVENT} telephone-event/8000\r\na=fmtp:{TELEPHONE_EVENT} 0-16\r\n"
            "a=ptime:20\r\na=sendrecv\r\n").encode()


def parse_sdp_answer(body: bytes) -> tuple[str, int, int | None]:
    """(connection address, audio port, telephone-event payload type or None) of an SDP answer."""
    address, port, te = "", 0, None
    for line in body.decode("utf-8", "replace").splitlines():
        if line.startswith("c=") and not port:
            address = line.split()[-1]
        elif line.startswith("m=audio") and not port:
            port = int(line.split()[1])
        elif line.startswith("a=rtpmap:") and "telephone-event" in line.lower():
            te = int(line[len("a=rtpmap:"):].split()[0])
    if not address or not port:
        raise ValueError("SDP answer without an address or an audio port")
    return address, port, te


# --- RTP (sans I/O) ---------------------------------------------------------------------------------


def build_rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def parse_rtp(data: bytes) -> tuple[int, int, int, int, bool, bytes]:
    """(payload type, seq, timestamp, SSRC, marker, payload); ValueError when it is not RTP v2."""
    if not 12 <= len(data) <= MAX_RTP_BYTES or data[0] >> 6 != 2:
        raise ValueError("not an RTP v2 packet")
    first, second, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
    offset, end = 12 + 4 * (first & 0x0F), len(data)
    if first & 0x10:
        if offset + 4 > end:
            raise ValueError("truncated header extension")
        offset += 4 + 4 * struct.unpack_from("!H", data, offset + 2)[0]
    if first & 0x20:
        end -= data[-1]
    if offset > end:
        raise ValueError("truncated RTP packet")
    return second & 0x7F, seq, ts, ssrc, bool(second & 0x80), data[offset:end]


@dataclass
class RtpReceiveStats:
    """Counters of one received stream, in the spirit of RFC 3550 A.3: `lost` = expected - received.

    `reply_gaps` are timestamp jumps of more than one frame between consecutive sequence numbers:
    time the sender skipped without losing a packet (silence it left out), with `reply_gap_s` summed.
    """

    received: int = 0
    lost: int = 0
    out_of_order: int = 0
    duplicates: int = 0
    reply_gaps: int = 0
    reply_gap_s: float = 0.0
    gaps: list[tuple[float, float, bool]] = field(default_factory=list)  # (arrival, seconds, marker)
    _ssrc: int | None = None
    _base = _max = _max_ts = 0  # first and highest extended sequence number seen, its timestamp
    _count = _lost_before = 0  # packets of this stream; loss counted in streams before it
    _seen: deque[int] = field(default_factory=lambda: deque(maxlen=512))

    def feed(self, seq: int, ts: int, ssrc: int, marker: bool, now: float) -> bool:
        """Count one packet; False for a duplicate (its audio must not be played twice)."""
        if ssrc != self._ssrc:  # a new stream: start over from this packet
            self._ssrc, self._base, self._max, self._max_ts = ssrc, seq, seq, ts
            self._seen.clear()
            self._seen.append(seq)
            self.received += 1
            self._count, self._lost_before = 1, self.lost
            return True
        delta = (seq - self._max) & 0xFFFF
        ext = self._max + delta if delta < 0x8000 else self._max - (0x10000 - delta)
        if ext in self._seen:
            self.duplicates += 1
            return False
        self._seen.append(ext)
        self.received += 1
        self._count += 1
        if ext < self._max:
            self.out_of_order += 1
        else:
            if ext == self._max + 1:
                step = (ts - self._max_ts) & 0xFFFFFFFF
                if FRAME < step < 0x80000000:
                    self.reply_gaps += 1
                    self.reply_gap_s += (step - FRAME) / RATE
                    self.gaps.append((now, (step - FRAME) / RATE, marker))
            self._max, self._max_ts = ext, ts
        self.lost = self._lost_before + max(0, self._max - self._base + 1 - self._count)
        return True


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Any) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.on_datagram(data, addr)


# --- the caller --------------------------------------------------------------------------------------


class SipCaller(PhoneCaller):
    """A SIP phone calling `sip:user@host:port` from 127.0.0.1; `headers` are added to the INVITE
    (e.g. `X-Kombain-Responder: script`, where the server reads such headers)."""

    def __init__(self, host: str, port: int, *, user: str = "kombain", headers: dict[str, str] | None = None,
                 loss: float = 0.0, jitter_ms: float = 0.0, seed: int | None = None,
                 local_host: str = "127.0.0.1") -> None:
        super().__init__(f"sip:{user}@{host}:{port}")
        self.server = (host, port)
        self.local_host = local_host
        self.extra_headers = headers or {}
        self.loss, self.jitter_ms = loss, jitter_ms
        self._rng = random.Random(seed)
        self.hangup = asyncio.Event()
        self.hung_up_by_server = False
        self.rx = RtpReceiveStats()
        self.packets_sent = self.packets_dropped = self.dtmf_packets = 0
        self.call_id = secrets.token_hex(12) + "@" + local_host
        self.from_tag, self.to_header, self.remote_target = secrets.token_hex(6), "", ""
        self._cseq = 1
        self.contact = self.from_header = self._invite_branch = ""
        self._sip: asyncio.DatagramTransport | None = None
        self._rtp: asyncio.DatagramTransport | None = None
        self._media: tuple[str, int] | None = None
        self._te_pt = TELEPHONE_EVENT
        self._ssrc = secrets.randbits(32)
        self._seq, self._ts = secrets.randbits(16), secrets.randbits(32)
        self._first_packet = True
        # A 4-deep queue of responses, newest dropped when full: nobody waits on more than one.
        self._responses: asyncio.Queue[SipMessage] = asyncio.Queue(maxsize=4)
        self._dtmf: deque[str] = deque(maxlen=32)  # digits waiting for the send loop
        self._event: list[bytes] = []  # telephone-event payloads still to send, one per 20 ms
        self._event_ts, self._event_first = 0, False
        self._dtmf_done = asyncio.Event()
        self._delayed: set[asyncio.TimerHandle] = set()
        self._ack: bytes = b""

    # -- signalling -----------------------------------------------------------------------------------

    async def connect(self, timeout_s: float = 15) -> None:
        """Place the call; SipCallFailed unless it is answered with 200 within `timeout_s`."""
        try:
            await self._invite(timeout_s)
        except BaseException:
            await self.close()
            raise

    async def _invite(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        self._sip, _ = await loop.create_datagram_endpoint(lambda: _Udp(self._sip_in), local_addr=(self.local_host, 0))
        self._rtp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self._rtp_in), local_addr=(self.local_host, 0))
        sip_port = self._sip.get_extra_info("sockname")[1]
        rtp_port = self._rtp.get_extra_info("sockname")[1]
        self.contact = f"<sip:caller@{self.local_host}:{sip_port}>"
        self.from_header = f"<sip:caller@{self.local_host}>;tag={self.from_tag}"
        self.to_header = f"<{self.url}>"
        body = sdp_offer(self.local_host, rtp_port, secrets.randbelow(2**31))
        invite = self._request("INVITE", self.url, body, extra=[("Content-Type", "application/sdp"),
                                                                  *self.extra_headers.items()])
        try:
            async with asyncio.timeout(timeout_s):
                final = await self._transaction(invite, "INVITE")
        except TimeoutError:
            raise SipCallFailed(0, "no final response to the INVITE") from None
        to = final.get("to")
        if final.status >= 300:  # a non-2xx is ACKed within its own transaction (same branch)
            self._send_sip(self._request("ACK", self.url, cseq=1, to=to, branch=self._invite_branch))
            raise SipCallFailed(final.status, final.reason)
        self.to_header = to
        self.remote_target = uri_of(final.get("contact")) or self.url
        address, port, te = parse_sdp_answer(final.body)
        self._media, self._te_pt = (address, port), te if te is not None else TELEPHONE_EVENT
        self._ack = self._request("ACK", self.remote_target, cseq=1)
        self._send_sip(self._ack)
        self._tasks = [asyncio.create_task(self._sender())]

    def _request(self, method: str, uri: str, body: bytes = b"", *, extra: Any = (), cseq: int | None = None,
                 to: str | None = None, branch: str | None = None) -> bytes:
        if cseq is None:
            cseq = self._cseq
        branch = branch or "z9hG4bK" + secrets.token_hex(8)
        if method == "INVITE":
            self._invite_branch = branch
        sip_port = self._sip.get_extra_info("sockname")[1] if self._sip else 0
        headers = [("Via", f"SIP/2.0/UDP {self.local_host}:{sip_port};branch={branch};rport"),
                   ("Max-Forwards", "70"), ("From", self.from_header), ("To", to or self.to_header),
                   ("Call-ID", self.call_id), ("CSeq", f"{cseq} {method}"), ("Contact", self.contact),
                   ("User-Agent", "kombain-sip-caller"), *extra]
        return build_sip(f"{method} {uri} SIP/2.0", headers, body)

    async def _transaction(self, data: bytes, method: str) -> SipMessage:
        """Send `data`, retransmitting (T1, doubling, at most 4 s) until a provisional response, and
        return the final one; the caller bounds it with `asyncio.timeout`."""
        interval, provisional = T1, False
        self._send_sip(data)
        while True:
            try:
                async with asyncio.timeout(interval):
                    msg = await self._responses.get()
            except TimeoutError:
                if not provisional:  # after a 1xx the server has it: no more retransmissions
                    self._send_sip(data)
                    interval = min(interval * 2, 4.0)
                continue
            if msg.cseq[1] != method:
                continue
            if msg.status >= 200:
                return msg
            provisional = True

    def _send_sip(self, data: bytes) -> None:
        if self._sip is not None and not self._sip.is_closing():
            self._sip.sendto(data, self.server)

    def _sip_in(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = parse_sip(data)
        except ValueError:
            return
        if msg.status:
            if msg.cseq[1] == "INVITE" and msg.status < 300 and self._ack and msg.status >= 200:
                self._send_sip(self._ack)  # a retransmitted 200: our ACK was lost
            with contextlib.suppress(asyncio.QueueFull):
                self._responses.put_nowait(msg)
            return
        if msg.method == "ACK":
            return
        status = 200 if msg.method in ("BYE", "OPTIONS", "INFO") else 501
        reply = [(k.title(), v) for k, v in msg.headers if k in ("via", "from", "to", "call-id", "cseq")]
        if self._sip is not None:
            self._sip.sendto(build_sip(f"SIP/2.0 {status} {'OK' if status == 200 else 'Not Implemented'}",
                                       reply), addr)
        if msg.method == "BYE" and msg.get("call-id") == self.call_id:
            now = time.monotonic()
            self.hung_up_by_server = True
            self.heard.commands.append((now, "BYE"))
            self.heard.close_reason = "BYE from the server"
            self._ended(now)

    def _ended(self, now: float) -> None:
        if not self.closed.is_set():
            self.heard.closed_at = now
            self.hangup.set()
            self.closed.set()

    async def stop(self, timeout_s: float = 5) -> None:
        """Hang up: BYE, and wait (bounded) for its final response; then close the sockets."""
        if self.remote_target and not self.closed.is_set():
            self._cseq += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._transaction(self._request("BYE", self.remote_target), "BYE")
            self._ended(time.monotonic())
        await self.close()

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for handle in self._delayed:
            handle.cancel()
        for transport in (self._sip, self._rtp):
            if transport is not None:
                transport.close()

    # -- media ----------------------------------------------------------------------------------------

    async def _send_audio(self, frame: np.ndarray) -> None:
        if self.closed.is_set():
            raise ConnectionError("the call is over")
        if not self._event and self._dtmf:
            self._start_event(self._dtmf.popleft())
        if self._event:  # a key press stands in for audio: one event packet per 20 ms
            payload = self._event.pop(0)
            self._send_rtp(build_rtp(self._te_pt, self._seq, self._event_ts, self._ssrc, payload,
                                     marker=self._event_first))
            self._event_first = False
            self._ts = (self._ts + FRAME) & 0xFFFFFFFF  # keeps the timeline on the wall clock
            self.dtmf_packets += 1
            if not self._event:
                self._dtmf_done.set()
        else:
            payload = _mulaw_encode(frame)
            self._send_rtp(build_rtp(PCMU, self._seq, self._ts, self._ssrc, payload, marker=self._first_packet))
            self._first_packet = False
            self._ts = (self._ts + len(frame)) & 0xFFFFFFFF
        self._seq = (self._seq + 1) & 0xFFFF

    def _start_event(self, digit: str, duration_ms: int = 100, volume: int = 10) -> None:
        """RFC 4733: every packet carries the onset's timestamp and the duration so far; the final
        one (E bit) is sent three times."""
        code = DTMF_CODES.index(digit.upper())
        steps = duration_ms // 20
        self._event_ts, self._event_first = self._ts, True
        self._event = [struct.pack("!BBH", code, volume, FRAME * k) for k in range(1, steps)]
        self._event += [struct.pack("!BBH", code, 0x80 | volume, FRAME * steps)] * 3

    async def dtmf(self, digit: str) -> None:
        """Press a key (0-9, *, #, A-D): queued for the send loop; returns once all its packets left."""
        if len(digit) != 1 or digit.upper() not in DTMF_CODES:
            raise ValueError(f"not a DTMF digit: {digit!r}")
        self._dtmf_done.clear()
        self._dtmf.append(digit)
        async with asyncio.timeout(5):
            while self._dtmf or self._event:
                await self._dtmf_done.wait()
                self._dtmf_done.clear()

    def _send_rtp(self, data: bytes) -> None:
        """Send one packet, through the impairment: dropped with probability `loss`, else delayed by
        uniform 0..`jitter_ms` (so packets may overtake each other)."""
        if self._rtp is None or self._media is None:
            return
        self.packets_sent += 1
        if self.loss and self._rng.random() < self.loss:
            self.packets_dropped += 1
            return
        delay = self._rng.uniform(0, self.jitter_ms) / 1000 if self.jitter_ms else 0.0
        if delay <= 0:
            self._rtp.sendto(data, self._media)
            return
        handle: asyncio.TimerHandle

        def send() -> None:
            self._delayed.discard(handle)
            if self._rtp is not None and not self._rtp.is_closing() and self._media is not None:
                self._rtp.sendto(data, self._media)

        handle = asyncio.get_running_loop().call_later(delay, send)
        self._delayed.add(handle)

    def _rtp_in(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            pt, seq, ts, ssrc, marker, payload = parse_rtp(data)
        except ValueError:
            return
        now = time.monotonic()
        if not self.rx.feed(seq, ts, ssrc, marker, now) or pt != PCMU:
            return
        pcm = _mulaw_decode(payload)
        self.heard.audio.append((now, pcm))
        self.playback.add_audio(len(pcm), now)

    def stats(self) -> dict[str, float]:
        """Packet counters of both directions."""
        rx = self.rx
        return {"sent": self.packets_sent, "dropped": self.packets_dropped, "dtmf_packets": self.dtmf_packets,
                "received": rx.received, "lost": rx.lost, "out_of_order": rx.out_of_order,
                "duplicates": rx.duplicates, "reply_gaps": rx.reply_gaps, "reply_gap_s": round(rx.reply_gap_s, 3)}
