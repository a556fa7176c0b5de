"""RFC 3261 server transactions (with RFC 6026's Accepted state) and the timer wheel they share
with our BYE and the dialogs' 2xx retransmissions: matching (section 17.2.3), responses and their
retransmission, and where they are sent (section 18.2.2, RFC 3581)."""

from __future__ import annotations

import heapq
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from kombain.server.transports.sip.actions import Action, Addr, Send
from kombain.server.transports.sip.message import (
    SipError,
    SipMessage,
    Via,
    format_host,
    parse_message,
    parse_name_addr,
    response_for,
    serialize,
    split_list,
)

log = logging.getLogger(__name__)

# RFC 3261 section 17.1.1.1 / table 4 (UDP values).
T1 = 0.5
T2 = 4.0
T4 = 5.0
TIMEOUT_64T1 = 64 * T1  # Timers B/F/H/J, and RFC 6026 Timer L

MAGIC_COOKIE = "z9hG4bK"
_REASONS = {400: "Bad Request", 513: "Message Too Large"}


class Timed(Protocol):
    """What the timer wheel holds: a transaction or a dialog, with its next deadline."""

    deadline: float | None
    alive: bool


@dataclass(eq=False)
class ServerTx:
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
class ClientTx:
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



def random_token(nbytes: int = 8) -> str:
    return secrets.token_hex(nbytes)


class Transactions:
    """Server transactions, our client transactions (BYE) and the timers; the layers above add
    dialogs and the method handlers."""

    def __init__(self, *, local_host: str, local_port: int, user_agent: str, max_message_bytes: int,
                 max_headers: int, clock: Callable[[], float], max_transactions: int,
                 force_rport: bool, retry_after_s: int) -> None:
        if "\r" in user_agent or "\n" in user_agent:
            raise ValueError("user_agent must be one line")
        self.local_host = local_host
        self.local_port = local_port
        self.user_agent = user_agent
        self.max_message_bytes = max_message_bytes
        self.max_headers = max_headers
        self.max_transactions = max_transactions
        # force_rport: answer every request at its source address, rport or not (NATed peers
        # that do not ask for it); the RFC 3261 rule otherwise uses the Via's port.
        self.force_rport = force_rport
        self.retry_after_s = retry_after_s
        self.contact = f"<sip:kombain@{format_host(local_host)}:{local_port}>"
        self._clock = clock
        self._server_txs: dict[tuple[str, ...], ServerTx] = {}
        self._client_txs: dict[str, ClientTx] = {}
        self._timers: list[tuple[float, int, Timed]] = []
        self._timer_seq = 0
        self._tick: float | None = None  # the `now` of the timer() call in progress

    def transaction_count(self) -> int:
        """Server and client transactions still held (completed ones linger up to 64*T1)."""
        return len(self._server_txs) + len(self._client_txs)

    def next_deadline(self) -> float | None:
        """When `timer()` next has work, on the injected clock; None if nothing is pending."""
        while self._timers:
            when, _, obj = self._timers[0]
            if obj.alive and obj.deadline == when:
                return when
            heapq.heappop(self._timers)
        return None

    def _now(self) -> float:
        """The timer() tick being processed, else the injected clock."""
        return self._tick if self._tick is not None else self._clock()

    # -- timers ----------------------------------------------------------------------------

    def _schedule(self, obj: Timed, when: float | None) -> None:
        obj.deadline = when
        if when is not None:
            self._timer_seq += 1
            heapq.heappush(self._timers, (when, self._timer_seq, obj))

    def _server_tx_timer(self, tx: ServerTx, now: float) -> list[Action]:
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

    def _drop_tx(self, tx: ServerTx) -> None:
        tx.alive = False
        if self._server_txs.get(tx.key) is tx:
            del self._server_txs[tx.key]

    def _drop_client_tx(self, ctx: ClientTx) -> None:
        ctx.alive = False
        if self._client_txs.get(ctx.branch) is ctx:
            del self._client_txs[ctx.branch]

    # -- responses -------------------------------------------------------------------------

    def _new_tx(self, key: tuple[str, ...], msg: SipMessage, dest: Addr,
                call_id: str | None = None) -> ServerTx:
        tx = ServerTx(key=key, method=msg.method or "", request=msg, dest=dest, call_id=call_id)
        self._server_txs[key] = tx
        return tx

    def _build(self, request: SipMessage, status: int, reason: str, *, to_tag: str | None,
               headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
               content_type: str | None = None) -> bytes:
        extra = [*headers, ("Server", self.user_agent)]
        msg = response_for(request, status, reason, to_tag=to_tag, headers=extra, body=body,
                           content_type=content_type)
        return serialize(msg)

    def _respond(self, tx: ServerTx, status: int, reason: str, *, to_tag: str | None = None,
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

    def _final_invite(self, tx: ServerTx, status: int, reason: str, *, to_tag: str | None,
                      headers: Iterable[tuple[str, str]] = ()) -> list[Action]:
        """A non-2xx final response to an INVITE: resent (Timer G) until ACK or Timer H."""
        actions = self._respond(tx, status, reason, to_tag=to_tag, headers=headers)
        now = self._now()
        tx.state = "completed"
        tx.interval = T1
        tx.give_up = now + TIMEOUT_64T1
        self._schedule(tx, now + T1)
        return actions

    def _refuse(self, tx: ServerTx, status: int, reason: str,
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
        return None if tagged else random_token()

    def _stateless(self, msg: SipMessage, dest: Addr, status: int, reason: str,
                   headers: Iterable[tuple[str, str]] = ()) -> list[Action]:
        if msg.method == "ACK":
            return []
        return [Send(self._build(msg, status, reason, to_tag=random_token(), headers=headers), dest)]

    # -- datagrams -------------------------------------------------------------------------

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
            data = self._build(partial, status, _REASONS[status], to_tag=random_token())
        except (ValueError, SipError):
            return []
        # The Via may be what is broken: answer where the datagram came from.
        return [Send(data, source)]

    def _tx_key(self, msg: SipMessage, via: Via, method: str) -> tuple[str, ...]:
        """Section 17.2.3 matching: branch + sent-by + method (ACK matches its INVITE)."""
        kind = "INVITE" if method == "ACK" else method
        if via.branch.startswith(MAGIC_COOKIE) and len(via.branch) > len(MAGIC_COOKIE):
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
