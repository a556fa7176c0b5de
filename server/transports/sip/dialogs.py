"""Dialogs (RFC 3261 section 12) keyed by Call-ID and tags: our 2xx retransmitted until the ACK
(section 13.3.1.4), and our BYE as a client transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kombain.server.transports.sip.actions import Action, Addr, CallEnded, Send
from kombain.server.transports.sip.message import (
    SipError,
    SipMessage,
    format_host,
    parse_name_addr,
    serialize,
)
from kombain.server.transports.sip.transactions import (
    MAGIC_COOKIE,
    T1,
    T2,
    TIMEOUT_64T1,
    ClientTx,
    ServerTx,
    Transactions,
    random_token,
)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO"


@dataclass(eq=False)
class Dialog:
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



class Dialogs(Transactions):
    """The calls' dialogs on top of the transactions."""

    def __init__(self, *, max_calls: int, **transaction_options: Any) -> None:
        super().__init__(**transaction_options)
        self.max_calls = max_calls
        self._calls: dict[str, Dialog] = {}

    def active_calls(self) -> int:
        """Calls that have not ended (no CallEnded emitted yet)."""
        return len(self._calls)

    def call_state(self, call_id: str) -> str | None:
        """"offered", "answering", "confirmed", "terminating", or None for an unknown call."""
        call = self._calls.get(call_id)
        return call.state if call else None

    def _dialog(self, msg: SipMessage) -> Dialog | None:
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

    def _end_call(self, call: Dialog, reason: str) -> list[Action]:
        """Forget the call and report it once; transactions linger to absorb retransmissions."""
        if self._calls.get(call.call_id) is not call:
            return []
        del self._calls[call.call_id]
        call.alive = False
        return [CallEnded(call.call_id, reason)]

    def _stop_2xx(self, call: Dialog) -> None:
        call.ok_data = None
        call.deadline = None

    def _send_2xx(self, call: Dialog, tx: ServerTx, sdp: bytes) -> list[Action]:
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

    def _send_bye(self, call: Dialog, *, report: bool) -> list[Action]:
        """BYE within the dialog; `report`: emit CallEnded("bye_sent") when it completes."""
        call.local_cseq += 1
        branch = MAGIC_COOKIE + random_token(10)
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
        ctx = ClientTx(branch=branch, data=data, dest=call.peer,
                        call_id=call.call_id if report else "", give_up=now + TIMEOUT_64T1)
        if len(self._client_txs) < self.max_transactions:
            self._client_txs[branch] = ctx
            self._schedule(ctx, now + T1)
        elif report:
            # No room to track it: send once and consider the call over.
            return [Send(data, call.peer), *self._end_call(call, "bye_sent")]
        return [Send(data, call.peer)]

    def _bye_finished(self, ctx: ClientTx) -> list[Action]:
        call = self._calls.get(ctx.call_id) if ctx.call_id else None
        if call is None or call.state != "terminating":
            return []
        return self._end_call(call, "bye_sent")

    # -- timers ----------------------------------------------------------------------------

    def _call_timer(self, call: Dialog, now: float) -> list[Action]:
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

    def _client_tx_timer(self, ctx: ClientTx, now: float) -> list[Action]:
        if now >= ctx.give_up:  # Timer F
            self._drop_client_tx(ctx)
            return self._bye_finished(ctx)
        ctx.interval = T2 if ctx.proceeding else min(ctx.interval * 2, T2)
        self._schedule(ctx, min(now + ctx.interval, ctx.give_up))
        return [Send(ctx.data, ctx.dest)]
