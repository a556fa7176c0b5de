"""A SIP user agent server over UDP, sans I/O: datagrams and a clock in, actions out.

`SipServerProtocol` answers calls for a voice application: RFC 3261 server transactions (with
RFC 6026's Accepted state), dialogs keyed by Call-ID and tags, 2xx retransmission until ACK,
CANCEL, BYE both ways, re-INVITE (hold/resume), OPTIONS, INFO DTMF (application/dtmf-relay),
digest authentication and RFC 3581 symmetric responses. The transport feeds it datagrams and
timer ticks and performs the `Send` actions; the application reacts to the call events and
answers through `accept()`, `reject()`, `accept_reoffer()` and `hangup()`.
"""

from __future__ import annotations

import heapq
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeAlias

from kombain.server.transports.sip.auth import DigestAuth
from kombain.server.transports.sip.message import (
    SipError,
    SipMessage,
    Via,
    format_host,
    parse_message,
    parse_name_addr,
    parse_via,
    response_for,
    serialize,
    split_list,
    stamp_via,
    uri_scheme,
)
from kombain.server.transports.sip.sdp import SdpError, SdpOffer, choose_codec, parse_offer

log = logging.getLogger(__name__)

Addr: TypeAlias = tuple[str, int]

# RFC 3261 section 17.1.1.1 / table 4 (UDP values).
T1 = 0.5
T2 = 4.0
T4 = 5.0
TIMEOUT_64T1 = 64 * T1  # Timers B/F/H/J, and RFC 6026 Timer L

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO"
ACCEPT = "application/sdp, application/dtmf-relay, application/dtmf"
# Methods we recognise but do not serve get 405; the rest 501 (section 21.4.6 / 21.5.2).
_KNOWN_METHODS = frozenset(
    {"REGISTER", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "UPDATE", "PRACK", "PUBLISH"}
)
_DTMF_TYPES = ("application/dtmf-relay", "application/dtmf")
_DTMF_DIGITS = "0123456789*#ABCD"
# RFC 4733 event numbers some gateways put in Signal= instead of the character.
_DTMF_EVENTS = {"10": "*", "11": "#", "12": "A", "13": "B", "14": "C", "15": "D"}
_MAGIC_COOKIE = "z9hG4bK"
_REASONS = {400: "Bad Request", 513: "Message Too Large"}


# ---------------------------------------------------------------------------------------------
# Actions


@dataclass(frozen=True)
class Send:
    """Send `data` as one UDP datagram to `addr`."""

    data: bytes
    addr: Addr


@dataclass(frozen=True)
class IncomingCall:
    """A new call; the application answers with `ringing()`, `accept()` or `reject()`."""

    call_id: str
    offer: SdpOffer
    from_uri: str
    to_uri: str
    source: Addr
    from_display: str = ""
    # Per-call options from `X-Kombain-<Name>` headers (lower-case names: responder, voice...).
    options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class CallEstablished:
    """The caller acknowledged our 200 OK: media may flow both ways."""

    call_id: str


@dataclass(frozen=True)
class CallEnded:
    """The call is over: "bye", "cancel", "ack_timeout", "bye_sent" or "rejected"."""

    call_id: str
    reason: str


@dataclass(frozen=True)
class Reoffer:
    """A re-INVITE with a new offer (hold, resume, new address); answer with `accept_reoffer()`."""

    call_id: str
    offer: SdpOffer


@dataclass(frozen=True)
class InfoDtmf:
    """A key press sent in a SIP INFO (application/dtmf-relay or application/dtmf)."""

    call_id: str
    digit: str
    duration_ms: int | None = None


Action: TypeAlias = Send | IncomingCall | CallEstablished | CallEnded | Reoffer | InfoDtmf


# ---------------------------------------------------------------------------------------------
# State


@dataclass(eq=False)
class _ServerTx:
    """A server transaction: the request, where its responses go, the last response sent."""

    key: tuple[str, ...]
    method: str
    request: SipMessage
    dest: Addr
    call_id: str | None = None
    # INVITE: proceeding -> completed (non-2xx) -> confirmed, or proceeding -> accepted (2xx).
    # Non-INVITE: completed at once.
    state: str = "proceeding"
    last: bytes | None = None
    status: int | None = None
    deadline: float | None = None
    interval: float = T1
    give_up: float = 0.0
    alive: bool = True


@dataclass(eq=False)
class _ClientTx:
    """Our BYE: retransmitted (Timer E) until a final response or Timer F."""

    branch: str
    data: bytes
    dest: Addr
    call_id: str
    give_up: float
    deadline: float | None = None
    interval: float = T1
    proceeding: bool = False
    alive: bool = True


@dataclass(eq=False)
class _Call:
    """A dialog (section 12) and what the call needs around it."""

    call_id: str
    local_tag: str
    remote_tag: str
    remote_from: str  # the peer's From value, our To in requests we send
    local_to: str  # the INVITE's To plus our tag, our From in requests we send
    remote_uri: str
    remote_target: str  # the peer's Contact URI: Request-URI of our requests
    route_set: list[str]
    peer: Addr  # where the INVITE came from: in-dialog requests go there (NAT friendly)
    remote_cseq: int
    invite_key: tuple[str, ...]  # the INVITE transaction awaiting a final response, if any
    state: str = "offered"  # offered -> answering -> confirmed -> terminating
    local_cseq: int = 0
    reinvite_key: tuple[str, ...] | None = None
    ok_data: bytes | None = None  # the 2xx being retransmitted until ACK
    ok_dest: Addr = ("", 0)
    ok_cseq: int = -1
    ok_interval: float = T1
    ok_give_up: float = 0.0
    deadline: float | None = None
    hangup_pending: bool = False
    last_sdp: bytes = b""
    alive: bool = True


_Timed: TypeAlias = _ServerTx | _ClientTx | _Call


def _token(nbytes: int = 8) -> str:
    return secrets.token_hex(nbytes)


# ---------------------------------------------------------------------------------------------
# Protocol


class SipServerProtocol:
    """The UAS state machine: feed `datagram_received()` and `timer()`, perform what they return."""

    def __init__(self, *, local_host: str, local_port: int, user_agent: str = "kombain",
                 auth: DigestAuth | None = None, max_message_bytes: int = 8192,
                 max_headers: int = 64, clock: Callable[[], float] = time.monotonic,
                 max_calls: int = 1000, max_transactions: int = 5000,
                 force_rport: bool = False, retry_after_s: int = 5) -> None:
        if "\r" in user_agent or "\n" in user_agent:
            raise ValueError("user_agent must be one line")
        self.local_host = local_host
        self.local_port = local_port
        self.user_agent = user_agent
        self.auth = auth
        self.max_message_bytes = max_message_bytes
        self.max_headers = max_headers
        self.max_calls = max_calls
        self.max_transactions = max_transactions
        # force_rport: answer every request at its source address, rport or not (NATed peers
        # that do not ask for it); the RFC 3261 rule otherwise uses the Via's port.
        self.force_rport = force_rport
        self.retry_after_s = retry_after_s
        # Set by the I/O layer while the node drains or is full: out-of-dialog OPTIONS get 503.
        self.unavailable = False
        self.contact = f"<sip:kombain@{format_host(local_host)}:{local_port}>"
        self._clock = clock
        self._server_txs: dict[tuple[str, ...], _ServerTx] = {}
        self._client_txs: dict[str, _ClientTx] = {}
        self._calls: dict[str, _Call] = {}
        self._timers: list[tuple[float, int, _Timed]] = []
        self._timer_seq = 0
        self._tick: float | None = None  # the `now` of the timer() call in progress

    # -- public API ------------------------------------------------------------------------

    def active_calls(self) -> int:
        """Calls that have not ended (no CallEnded emitted yet)."""
        return len(self._calls)

    def transaction_count(self) -> int:
        """Server and client transactions still held (completed ones linger up to 64*T1)."""
        return len(self._server_txs) + len(self._client_txs)

    def call_state(self, call_id: str) -> str | None:
        """"offered", "answering", "confirmed", "terminating", or None for an unknown call."""
        call = self._calls.get(call_id)
        return call.state if call else None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> list[Action]:
        """Handle one datagram from `addr`; never raises on what a peer sends."""
        try:
            source = (str(addr[0]), int(addr[1]))
            return self._datagram(bytes(data), source)
        except Exception:  # a network-facing state machine must not die on one bad datagram
            log.exception("sip: internal error handling a datagram from %r", addr)
            return []

    def ringing(self, call_id: str) -> list[Action]:
        """Send 180 Ringing for a call still being offered."""
        call = self._calls.get(call_id)
        if call is None or call.state != "offered":
            return []
        tx = self._server_txs.get(call.invite_key)
        if tx is None or tx.state != "proceeding":
            return []
        return self._respond(tx, 180, "Ringing", to_tag=call.local_tag,
                             headers=[("Contact", self.contact)])

    def accept(self, call_id: str, sdp_answer: bytes) -> list[Action]:
        """Answer the call with 200 OK and `sdp_answer`; retransmitted until the ACK."""
        call = self._calls.get(call_id)
        if call is None or call.state != "offered":
            return []
        tx = self._server_txs.get(call.invite_key)
        if tx is None or tx.state != "proceeding":
            return []
        call.state = "answering"
        return self._send_2xx(call, tx, sdp_answer)

    def reject(self, call_id: str, status: int, reason: str, *,
               retry_after: int | None = None) -> list[Action]:
        """Refuse a call still being offered with a final status (486, 503, 488...)."""
        if not 300 <= status <= 699:
            raise ValueError(f"reject needs a 3xx-6xx status, not {status}")
        call = self._calls.get(call_id)
        if call is None or call.state != "offered":
            return []
        tx = self._server_txs.get(call.invite_key)
        actions: list[Action] = []
        if tx is not None and tx.state == "proceeding":
            headers = [("Retry-After", str(int(retry_after)))] if retry_after is not None else []
            actions += self._final_invite(tx, status, reason, to_tag=call.local_tag,
                                          headers=headers)
        return actions + self._end_call(call, "rejected")

    def accept_reoffer(self, call_id: str, sdp_answer: bytes) -> list[Action]:
        """Answer a pending re-INVITE (Reoffer) with 200 OK and `sdp_answer`."""
        call = self._calls.get(call_id)
        if call is None or call.reinvite_key is None:
            return []
        tx = self._server_txs.get(call.reinvite_key)
        call.reinvite_key = None
        if tx is None or tx.state != "proceeding":
            return []
        return self._send_2xx(call, tx, sdp_answer)

    def reject_reoffer(self, call_id: str, status: int = 488,
                       reason: str = "Not Acceptable Here") -> list[Action]:
        """Refuse a pending re-INVITE; the call goes on with the previous session."""
        if not 300 <= status <= 699:
            raise ValueError(f"reject_reoffer needs a 3xx-6xx status, not {status}")
        call = self._calls.get(call_id)
        if call is None or call.reinvite_key is None:
            return []
        tx = self._server_txs.get(call.reinvite_key)
        call.reinvite_key = None
        if tx is None or tx.state != "proceeding":
            return []
        return self._final_invite(tx, status, reason, to_tag=call.local_tag)

    def hangup(self, call_id: str) -> list[Action]:
        """End the call from our side: BYE when established; 603 Decline while still offered."""
        call = self._calls.get(call_id)
        if call is None:
            return []
        if call.state == "offered":
            return self.reject(call_id, 603, "Decline")
        if call.state == "answering":
            # Section 15: no BYE before the ACK of our 2xx; it leaves when the ACK (or timeout) does.
            call.hangup_pending = True
            return []
        if call.state == "terminating":
            return []
        actions: list[Action] = []
        if call.reinvite_key is not None:
            tx = self._server_txs.get(call.reinvite_key)
            call.reinvite_key = None
            if tx is not None and tx.state == "proceeding":
                actions += self._final_invite(tx, 487, "Request Terminated", to_tag=call.local_tag)
        self._stop_2xx(call)
        call.state = "terminating"
        return actions + self._send_bye(call, report=True)

    def next_deadline(self) -> float | None:
        """When `timer()` next has work, on the injected clock; None if nothing is pending."""
        while self._timers:
            when, _, obj = self._timers[0]
            if obj.alive and obj.deadline == when:
                return when
            heapq.heappop(self._timers)
        return None

    def timer(self, now: float) -> list[Action]:
        """Fire every timer due at `now`: retransmissions and timeouts."""
        actions: list[Action] = []
        self._tick = now
        try:
            while self._timers and self._timers[0][0] <= now:
                when, _, obj = heapq.heappop(self._timers)
                if not obj.alive or obj.deadline != when:
                    continue  # superseded or cancelled
                obj.deadline = None
                if isinstance(obj, _ServerTx):
                    actions += self._server_tx_timer(obj, now)
                elif isinstance(obj, _ClientTx):
                    actions += self._client_tx_timer(obj, now)
                else:
                    actions += self._call_timer(obj, now)
        finally:
            self._tick = None
        return actions

    def _now(self) -> float:
        """The timer() tick being processed, else the injected clock."""
        return self._tick if self._tick is not None else self._clock()

    # -- timers ----------------------------------------------------------------------------

    def _schedule(self, obj: _Timed, when: float | None) -> None:
        obj.deadline = when
        if when is not None:
            self._timer_seq += 1
            heapq.heappush(self._timers, (when, self._timer_seq, obj))

    def _server_tx_timer(self, tx: _ServerTx, now: float) -> list[Action]:
        if tx.state == "completed" and tx.method == "INVITE":
            if now >= tx.give_up:  # Timer H: the ACK never came
                self._drop_tx(tx)
                return []
            # Timer G: resend the final response, doubling up to T2.
            tx.interval = min(tx.interval * 2, T2)
            self._schedule(tx, min(now + tx.interval, tx.give_up))
            return [Send(tx.last, tx.dest)] if tx.last else []
        # Timers I, J and L: the transaction has absorbed what it had to.
        self._drop_tx(tx)
        return []

    def _client_tx_timer(self, ctx: _ClientTx, now: float) -> list[Action]:
        if now >= ctx.give_up:  # Timer F
            self._drop_client_tx(ctx)
            return self._bye_finished(ctx)
        ctx.interval = T2 if ctx.proceeding else min(ctx.interval * 2, T2)
        self._schedule(ctx, min(now + ctx.interval, ctx.give_up))
        return [Send(ctx.data, ctx.dest)]

    def _call_timer(self, call: _Call, now: float) -> list[Action]:
        if call.ok_data is None:
            return []
        if now >= call.ok_give_up:
            # Section 13.3.1.4: no ACK within 64*T1 -> the session is over; BYE it.
            self._stop_2xx(call)
            actions = self._end_call(call, "ack_timeout")
            return actions + self._send_bye(call, report=False)
        call.ok_interval = min(call.ok_interval * 2, T2)
        self._schedule(call, min(now + call.ok_interval, call.ok_give_up))
        return [Send(call.ok_data, call.ok_dest)]

    # -- plumbing --------------------------------------------------------------------------

    def _drop_tx(self, tx: _ServerTx) -> None:
        tx.alive = False
        if self._server_txs.get(tx.key) is tx:
            del self._server_txs[tx.key]

    def _drop_client_tx(self, ctx: _ClientTx) -> None:
        ctx.alive = False
        if self._client_txs.get(ctx.branch) is ctx:
            del self._client_txs[ctx.branch]

    def _end_call(self, call: _Call, reason: str) -> list[Action]:
        """Forget the call and report it once; transactions linger to absorb retransmissions."""
        if self._calls.get(call.call_id) is not call:
            return []
        del self._calls[call.call_id]
        call.alive = False
        return [CallEnded(call.call_id, reason)]

    def _stop_2xx(self, call: _Call) -> None:
        call.ok_data = None
        call.deadline = None

    def _new_tx(self, key: tuple[str, ...], msg: SipMessage, dest: Addr,
                call_id: str | None = None) -> _ServerTx:
        tx = _ServerTx(key=key, method=msg.method or "", request=msg, dest=dest, call_id=call_id)
        self._server_txs[key] = tx
        return tx

    def _build(self, request: SipMessage, status: int, reason: str, *, to_tag: str | None,
               headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
               content_type: str | None = None) -> bytes:
        extra = [*headers, ("Server", self.user_agent)]
        msg = response_for(request, status, reason, to_tag=to_tag, headers=extra, body=body,
                           content_type=content_type)
        return serialize(msg)

    def _respond(self, tx: _ServerTx, status: int, reason: str, *, to_tag: str | None = None,
                 headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
                 content_type: str | None = None) -> list[Action]:
        """Send a response in `tx`; a final one to a non-INVITE completes it (Timer J)."""
        data = self._build(tx.request, status, reason, to_tag=to_tag, headers=headers, body=body,
                           content_type=content_type)
        tx.last, tx.status = data, status
        if tx.method != "INVITE" and status >= 200:
            tx.state = "completed"
            self._schedule(tx, self._now() + TIMEOUT_64T1)
        return [Send(data, tx.dest)]

    def _final_invite(self, tx: _ServerTx, status: int, reason: str, *, to_tag: str | None,
                      headers: Iterable[tuple[str, str]] = ()) -> list[Action]:
        """A non-2xx final response to an INVITE: resent (Timer G) until ACK or Timer H."""
        actions = self._respond(tx, status, reason, to_tag=to_tag, headers=headers)
        now = self._now()
        tx.state = "completed"
        tx.interval = T1
        tx.give_up = now + TIMEOUT_64T1
        self._schedule(tx, now + T1)
        return actions

    def _send_2xx(self, call: _Call, tx: _ServerTx, sdp: bytes) -> list[Action]:
        headers = [("Contact", self.contact), ("Allow", ALLOW)]
        actions = self._respond(tx, 200, "OK", to_tag=call.local_tag, headers=headers, body=sdp,
                                content_type="application/sdp")
        now = self._now()
        # RFC 6026 Accepted: the transaction only absorbs INVITE retransmissions (Timer L);
        # the dialog layer retransmits the 2xx until the ACK (section 13.3.1.4).
        tx.state = "accepted"
        self._schedule(tx, now + TIMEOUT_64T1)
        call.last_sdp = sdp
        call.ok_data = tx.last
        call.ok_dest = tx.dest
        call.ok_cseq = tx.request.cseq[0]
        call.ok_interval = T1
        call.ok_give_up = now + TIMEOUT_64T1
        self._schedule(call, now + T1)
        return actions

    def _send_bye(self, call: _Call, *, report: bool) -> list[Action]:
        """BYE within the dialog; `report`: emit CallEnded("bye_sent") when it completes."""
        call.local_cseq += 1
        branch = _MAGIC_COOKIE + _token(10)
        headers: list[tuple[str, str]] = [
            ("Via", f"SIP/2.0/UDP {format_host(self.local_host)}:{self.local_port};"
                    f"branch={branch};rport"),
            ("Max-Forwards", "70"),
            *[("Route", route) for route in call.route_set],
            ("From", call.local_to),
            ("To", call.remote_from),
            ("Call-ID", call.call_id),
            ("CSeq", f"{call.local_cseq} BYE"),
            ("User-Agent", self.user_agent),
        ]
        data = serialize(SipMessage(method="BYE", uri=call.remote_target, headers=headers))
        now = self._now()
        ctx = _ClientTx(branch=branch, data=data, dest=call.peer,
                        call_id=call.call_id if report else "", give_up=now + TIMEOUT_64T1)
        if len(self._client_txs) < self.max_transactions:
            self._client_txs[branch] = ctx
            self._schedule(ctx, now + T1)
        elif report:
            # No room to track it: send once and consider the call over.
            return [Send(data, call.peer), *self._end_call(call, "bye_sent")]
        return [Send(data, call.peer)]

    def _bye_finished(self, ctx: _ClientTx) -> list[Action]:
        call = self._calls.get(ctx.call_id) if ctx.call_id else None
        if call is None or call.state != "terminating":
            return []
        return self._end_call(call, "bye_sent")

    # -- datagrams -------------------------------------------------------------------------

    def _datagram(self, data: bytes, source: Addr) -> list[Action]:
        if not data.strip(b" \t\r\n"):
            return []  # CRLF keep-alive
        try:
            msg = self._parse(data)
        except SipError as exc:
            return self._malformed(exc, source)
        if msg.is_request:
            return self._on_request(msg, source)
        return self._on_response(msg)

    def _parse(self, data: bytes) -> SipMessage:
        return parse_message(data, max_bytes=self.max_message_bytes, max_headers=self.max_headers)

    def _malformed(self, exc: SipError, source: Addr) -> list[Action]:
        """400 (or 513) to a broken request that names a Via to answer; drop anything else."""
        partial = exc.partial
        log.debug("sip: malformed datagram from %s: %s", source, exc)
        if partial is None or not partial.is_request or partial.method == "ACK":
            return []
        if not partial.headers_all("Via"):
            return []
        status = exc.status if exc.status in _REASONS else 400
        try:
            data = self._build(partial, status, _REASONS[status], to_tag=_token())
        except (ValueError, SipError):
            return []
        # The Via may be what is broken: answer where the datagram came from.
        return [Send(data, source)]

    def _tx_key(self, msg: SipMessage, via: Via, method: str) -> tuple[str, ...]:
        """Section 17.2.3 matching: branch + sent-by + method (ACK matches its INVITE)."""
        kind = "INVITE" if method == "ACK" else method
        if via.branch.startswith(_MAGIC_COOKIE) and len(via.branch) > len(_MAGIC_COOKIE):
            return ("3261", via.branch, via.sent_by, kind)
        # RFC 2543 peers: Call-ID, From tag, CSeq number and the top Via identify a transaction.
        try:
            from_tag = parse_name_addr(msg.header("From") or "").tag or ""
        except SipError:
            from_tag = ""
        top = split_list(msg.header("Via") or "")
        return ("2543", msg.call_id, from_tag, str(msg.cseq[0]), top[0] if top else "", kind)

    def _response_dest(self, via: Via, source: Addr) -> Addr:
        """Section 18.2.2 with RFC 3581: the source address, and its port when rport is asked."""
        if self.force_rport or "rport" in via.params:
            return source
        return (source[0], via.port or 5060)

    def _stateless(self, msg: SipMessage, dest: Addr, status: int, reason: str,
                   headers: Iterable[tuple[str, str]] = ()) -> list[Action]:
        if msg.method == "ACK":
            return []
        return [Send(self._build(msg, status, reason, to_tag=_token(), headers=headers), dest)]

    def _on_request(self, msg: SipMessage, source: Addr) -> list[Action]:
        vias = msg.header_list("Via")
        try:
            if not vias:
                raise SipError("empty Via")
            top = parse_via(vias[0])
            stamped = stamp_via(vias[0], source)
        except SipError:
            err = SipError("bad Via", partial=msg)
            return self._malformed(err, source)
        key = self._tx_key(msg, top, msg.method or "")
        # Responses carry the Via as we received it plus received/rport (RFC 3581 section 4).
        msg.headers = _replace_top_via(msg.headers, stamped)
        dest = self._response_dest(top, source)
        method = msg.method or ""

        if method == "ACK":
            return self._on_ack(msg, key)
        tx = self._server_txs.get(key)
        if tx is not None:
            # A retransmission: repeat the last response (none yet: the app is still deciding).
            return [Send(tx.last, tx.dest)] if tx.last else []
        if len(self._server_txs) >= self.max_transactions:
            return self._stateless(msg, dest, 503, "Service Unavailable",
                                   [("Retry-After", str(self.retry_after_s))])
        if method == "CANCEL":
            return self._on_cancel(msg, top, dest)

        call_id = msg.call_id
        tx = self._new_tx(key, msg, dest, call_id)
        unsupported = _options(msg.headers_all("Require"))
        if unsupported:
            # Section 8.2.2.3: we implement no extension a request could require.
            return self._refuse(tx, 420, "Bad Extension", [("Unsupported", ", ".join(unsupported))])
        if uri_scheme(msg.uri or "") not in ("sip", "sips", "tel"):
            return self._refuse(tx, 416, "Unsupported URI Scheme")
        if method == "INVITE":
            return self._on_invite(msg, tx, source)
        if method == "BYE":
            return self._on_bye(msg, tx)
        if method == "OPTIONS":
            return self._on_options(msg, tx)
        if method == "INFO":
            return self._on_info(msg, tx)
        status, reason = (405, "Method Not Allowed") if method in _KNOWN_METHODS \
            else (501, "Not Implemented")
        return self._refuse(tx, status, reason, [("Allow", ALLOW)])

    def _refuse(self, tx: _ServerTx, status: int, reason: str,
                headers: Iterable[tuple[str, str]] = ()) -> list[Action]:
        """A final error response, keeping an existing To tag or adding a fresh one."""
        to_tag = self._to_tag_for(tx.request)
        if tx.method == "INVITE":
            return self._final_invite(tx, status, reason, to_tag=to_tag, headers=headers)
        return self._respond(tx, status, reason, to_tag=to_tag, headers=headers)

    @staticmethod
    def _to_tag_for(msg: SipMessage) -> str | None:
        """None when the request's To already has a tag (in-dialog), else a fresh one."""
        try:
            tagged = parse_name_addr(msg.header("To") or "").tag is not None
        except SipError:
            tagged = False
        return None if tagged else _token()

    def _dialog(self, msg: SipMessage) -> _Call | None:
        """The call this in-dialog request belongs to (Call-ID and both tags), or None."""
        call = self._calls.get(msg.call_id)
        if call is None:
            return None
        try:
            to_tag = parse_name_addr(msg.header("To") or "").tag
            from_tag = parse_name_addr(msg.header("From") or "").tag
        except SipError:
            return None
        if to_tag != call.local_tag or (from_tag or "") != call.remote_tag:
            return None
        return call

    def _challenge(self, msg: SipMessage) -> list[tuple[str, str]] | None:
        """None if `msg` may proceed; else the WWW-Authenticate headers for a 401."""
        if self.auth is None:
            return None
        stale = False
        for value in msg.headers_all("Authorization"):
            result = self.auth.check(msg.method or "", value, uri=msg.uri)
            if result.username is not None:
                return None
            stale = stale or result.stale
        return [("WWW-Authenticate", self.auth.challenge(stale=stale))]

    # -- INVITE ----------------------------------------------------------------------------

    def _on_invite(self, msg: SipMessage, tx: _ServerTx, source: Addr) -> list[Action]:
        try:
            to = parse_name_addr(msg.header("To") or "")
            frm = parse_name_addr(msg.header("From") or "")
        except SipError:
            return self._refuse(tx, 400, "Bad Request")
        if to.tag:
            return self._on_reinvite(msg, tx)
        if msg.call_id in self._calls:
            # Section 8.2.2.2: the same call arriving again by another path (or a Call-ID clash).
            return self._refuse(tx, 482, "Loop Detected")
        challenge = self._challenge(msg)
        if challenge is not None:
            return self._refuse(tx, 401, "Unauthorized", challenge)
        if len(self._calls) >= self.max_calls:
            return self._refuse(tx, 503, "Service Unavailable",
                                [("Retry-After", str(self.retry_after_s))])
        offer_or_error = self._offer_of(msg)
        if not isinstance(offer_or_error, SdpOffer):
            status, reason, headers = offer_or_error
            return self._refuse(tx, status, reason, headers)
        contact = _contact_uri(msg)
        if contact is None:
            return self._refuse(tx, 400, "Bad Request")
        local_tag = _token()
        call = _Call(
            call_id=msg.call_id, local_tag=local_tag, remote_tag=frm.tag or "",
            remote_from=msg.header("From") or "", local_to=f"{msg.header('To')};tag={local_tag}",
            remote_uri=frm.uri, remote_target=contact,
            route_set=msg.header_list("Record-Route"), peer=source,
            remote_cseq=msg.cseq[0], invite_key=tx.key,
        )
        self._calls[call.call_id] = call
        actions = self._respond(tx, 100, "Trying")
        actions.append(IncomingCall(call_id=call.call_id, offer=offer_or_error, from_uri=frm.uri,
                                    to_uri=to.uri, source=source, from_display=frm.display,
                                    options=call_options(msg)))
        return actions

    def _offer_of(self, msg: SipMessage) -> SdpOffer | tuple[int, str, list[tuple[str, str]]]:
        """The INVITE's SDP offer, or (status, reason, headers) to refuse it with."""
        ctype = (msg.header("Content-Type") or "").split(";", 1)[0].strip().lower()
        if not msg.body.strip():
            # A delayed offer (no SDP in the INVITE) would need us to offer first: unsupported.
            return 488, "Not Acceptable Here", [("Warning", '304 kombain "SDP offer required"')]
        if ctype != "application/sdp":
            return 415, "Unsupported Media Type", [("Accept", "application/sdp")]
        encoding = (msg.header("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("", "identity"):
            return 415, "Unsupported Media Type", [("Accept-Encoding", "identity")]
        try:
            offer = parse_offer(msg.body)
            choose_codec(offer)
        except SdpError as exc:
            if exc.status == 488:
                return 488, "Not Acceptable Here", [("Warning", '305 kombain "Incompatible media"')]
            return 400, "Bad Request", []
        return offer

    def _on_reinvite(self, msg: SipMessage, tx: _ServerTx) -> list[Action]:
        call = self._dialog(msg)
        if call is None:
            return self._refuse(tx, 481, "Call/Transaction Does Not Exist")
        number = msg.cseq[0]
        if number <= call.remote_cseq:
            return self._refuse(tx, 500, "Server Internal Error")
        call.remote_cseq = number
        if call.state == "terminating":
            return self._refuse(tx, 481, "Call/Transaction Does Not Exist")
        if call.state != "confirmed" or call.reinvite_key is not None or call.ok_data is not None:
            # Section 14.2: an INVITE while another is unfinished on the dialog.
            return self._refuse(tx, 500, "Server Internal Error",
                                [("Retry-After", str(secrets.randbelow(10) + 1))])
        contact = _contact_uri(msg)
        if contact is not None:
            call.remote_target = contact  # section 12.2.2: a re-INVITE refreshes the target
        if not msg.body.strip():
            # Offerless re-INVITE (session refresh): offer our current session again.
            call.reinvite_key = None
            return self._send_2xx(call, tx, call.last_sdp)
        offer_or_error = self._offer_of(msg)
        if not isinstance(offer_or_error, SdpOffer):
            status, reason, headers = offer_or_error
            return self._final_invite(tx, status, reason, to_tag=call.local_tag, headers=headers)
        call.reinvite_key = tx.key
        actions = self._respond(tx, 100, "Trying")
        actions.append(Reoffer(call.call_id, offer_or_error))
        return actions

    # -- ACK, CANCEL, BYE ------------------------------------------------------------------

    def _on_ack(self, msg: SipMessage, key: tuple[str, ...]) -> list[Action]:
        tx = self._server_txs.get(key)
        if tx is not None and tx.method == "INVITE" and tx.state in ("completed", "confirmed"):
            if tx.state == "completed":
                # ACK for a non-2xx final: stop Timer G, linger T4 (Timer I) for stray copies.
                tx.state = "confirmed"
                self._schedule(tx, self._now() + T4)
            return []
        call = self._dialog(msg)
        if call is None or call.ok_data is None or msg.cseq[0] != call.ok_cseq:
            return []  # an ACK is never answered; stray ones are dropped
        self._stop_2xx(call)
        if call.state != "answering":
            return []  # the ACK of a re-INVITE's 2xx
        call.state = "confirmed"
        if call.hangup_pending:
            call.state = "terminating"
            return self._send_bye(call, report=True)
        return [CallEstablished(call.call_id)]

    def _on_cancel(self, msg: SipMessage, top: Via, dest: Addr) -> list[Action]:
        invite_key = self._tx_key(msg, top, "INVITE")
        invite_tx = self._server_txs.get(invite_key)
        tx = self._new_tx(self._tx_key(msg, top, "CANCEL"), msg, dest, msg.call_id)
        if invite_tx is None:
            return self._respond(tx, 481, "Call/Transaction Does Not Exist", to_tag=_token())
        call = self._calls.get(msg.call_id)
        owned = call is not None and invite_key in (call.invite_key, call.reinvite_key)
        to_tag = call.local_tag if call is not None and owned else _token()
        # Section 9.2: 200 to the CANCEL; it only has an effect before the final response.
        actions = self._respond(tx, 200, "OK", to_tag=to_tag)
        if invite_tx.state != "proceeding":
            return actions
        actions += self._final_invite(invite_tx, 487, "Request Terminated", to_tag=to_tag)
        if call is not None and owned:
            if call.state == "offered" and invite_key == call.invite_key:
                actions += self._end_call(call, "cancel")
            elif invite_key == call.reinvite_key:
                call.reinvite_key = None
        return actions

    def _on_bye(self, msg: SipMessage, tx: _ServerTx) -> list[Action]:
        call = self._dialog(msg)
        if call is None:
            return self._refuse(tx, 481, "Call/Transaction Does Not Exist")
        number = msg.cseq[0]
        if number <= call.remote_cseq:
            return self._refuse(tx, 500, "Server Internal Error")
        call.remote_cseq = number
        actions = self._respond(tx, 200, "OK")
        # Section 15.1.2: requests still pending in the dialog get 487.
        for key in (call.invite_key, call.reinvite_key):
            pending = self._server_txs.get(key) if key else None
            if pending is not None and pending.state == "proceeding":
                actions += self._final_invite(pending, 487, "Request Terminated",
                                              to_tag=call.local_tag)
        self._stop_2xx(call)
        return actions + self._end_call(call, "bye")

    # -- OPTIONS, INFO ---------------------------------------------------------------------

    def _on_options(self, msg: SipMessage, tx: _ServerTx) -> list[Action]:
        try:
            in_dialog = parse_name_addr(msg.header("To") or "").tag is not None
        except SipError:
            return self._refuse(tx, 400, "Bad Request")
        if in_dialog:
            if self._dialog(msg) is None:
                return self._refuse(tx, 481, "Call/Transaction Does Not Exist")
        else:
            challenge = self._challenge(msg)
            if challenge is not None:
                return self._refuse(tx, 401, "Unauthorized", challenge)
        headers = [("Allow", ALLOW), ("Accept", ACCEPT), ("Contact", self.contact)]
        if not in_dialog and self.unavailable:  # a dispatcher's ping: take this node out of rotation
            return self._refuse(tx, 503, "Service Unavailable", [("Retry-After", str(self.retry_after_s)), *headers])
        return self._respond(tx, 200, "OK", to_tag=self._to_tag_for(msg), headers=headers)

    def _on_info(self, msg: SipMessage, tx: _ServerTx) -> list[Action]:
        call = self._dialog(msg)
        if call is None:
            return self._refuse(tx, 481, "Call/Transaction Does Not Exist")
        number = msg.cseq[0]
        if number <= call.remote_cseq:
            return self._refuse(tx, 500, "Server Internal Error")
        call.remote_cseq = number
        if not msg.body.strip():
            return self._respond(tx, 200, "OK")  # an empty INFO is a keep-alive probe
        ctype = (msg.header("Content-Type") or "").split(";", 1)[0].strip().lower()
        if ctype not in _DTMF_TYPES:
            return self._refuse(tx, 415, "Unsupported Media Type", [("Accept", ACCEPT)])
        parsed = parse_dtmf_body(msg.body, ctype)
        if parsed is None:
            return self._refuse(tx, 400, "Bad Request")
        digit, duration = parsed
        return self._respond(tx, 200, "OK") + [InfoDtmf(call.call_id, digit, duration)]

    # -- responses -------------------------------------------------------------------------

    def _on_response(self, msg: SipMessage) -> list[Action]:
        try:
            top = parse_via(msg.header_list("Via")[0])
            _, method = msg.cseq
        except (SipError, IndexError):
            return []
        ctx = self._client_txs.get(top.branch)
        if ctx is None or method != "BYE" or msg.status is None:
            return []  # not ours, or a late copy after the transaction ended
        if msg.status < 200:
            ctx.proceeding = True
            return []
        # Any final response ends the BYE; even a 481 or 408 means the dialog is gone.
        self._drop_client_tx(ctx)
        return self._bye_finished(ctx)


# ---------------------------------------------------------------------------------------------
# Helpers


def _replace_top_via(headers: list[tuple[str, str]], stamped: str) -> list[tuple[str, str]]:
    """The headers with the first Via value replaced (keeping any values folded after it)."""
    out = list(headers)
    for i, (name, value) in enumerate(out):
        if name == "Via":
            rest = split_list(value)[1:]
            out[i] = (name, ", ".join([stamped, *rest]))
            break
    return out


def _options(values: list[str]) -> list[str]:
    return [opt for value in values for opt in split_list(value)]


def _contact_uri(msg: SipMessage) -> str | None:
    """The URI of the first Contact, None if it is missing or unreadable."""
    contacts = msg.header_list("Contact")
    if not contacts:
        return None
    try:
        return parse_name_addr(contacts[0]).uri
    except SipError:
        return None


def parse_dtmf_body(body: bytes, content_type: str) -> tuple[str, int | None] | None:
    """(digit, duration ms) from an INFO body: `Signal=5\\r\\nDuration=160` or a bare `5`."""
    text = body.decode("utf-8", errors="replace").strip()
    signal: str | None = None
    duration: int | None = None
    if content_type == "application/dtmf" and "=" not in text:
        signal = text
    else:
        for line in text.splitlines()[:16]:
            name, _, value = line.partition("=")
            name, value = name.strip().lower(), value.strip()
            if name == "signal":
                signal = value
            elif name == "duration" and value.isascii() and value.isdigit() and len(value) <= 6:
                duration = int(value)
    if signal is None:
        return None
    signal = _DTMF_EVENTS.get(signal, signal).upper()
    if len(signal) != 1 or signal not in _DTMF_DIGITS:
        return None
    return signal, duration


OPTION_PREFIX = "x-kombain-"


def call_options(msg: SipMessage) -> tuple[tuple[str, str], ...]:
    """`X-Kombain-Responder: script` and the like (what Asterisk's PJSIP_HEADER(add,...) or
    FreeSWITCH's sip_h_X-... put on an INVITE), as (name, value) pairs; the first of each wins."""
    seen: dict[str, str] = {}
    for key, value in msg.headers:
        if key.lower().startswith(OPTION_PREFIX):
            seen.setdefault(key[len(OPTION_PREFIX):].lower(), value.strip())
    return tuple(seen.items())
