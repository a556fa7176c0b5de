"""A SIP user agent server over UDP, sans I/O: datagrams and a clock in, actions out.

`SipServerProtocol` answers calls for a voice application: RFC 3261 server transactions (with
RFC 6026's Accepted state), dialogs keyed by Call-ID and tags, 2xx retransmission until ACK,
CANCEL, BYE both ways, re-INVITE (hold/resume), OPTIONS, INFO DTMF (application/dtmf-relay),
digest authentication and RFC 3581 symmetric responses. The transport feeds it datagrams and
timer ticks and performs the `Send` actions; the application reacts to the call events and
answers through `accept()`, `reject()`, `accept_reoffer()` and `hangup()`.

The state machine is built in layers, one module each: `transactions` (server transactions, our
BYE's client transaction, the timers), `dialogs` (calls, 2xx retransmission, BYE), `handlers`
(one method per SIP method) and here the public API; `actions` holds what it returns.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable

from kombain.server.transports.sip.actions import (
    Action,
    Addr,
    CallEnded,
    CallEstablished,
    IncomingCall,
    InfoDtmf,
    Reoffer,
    Send,
)
from kombain.server.transports.sip.auth import DigestAuth
from kombain.server.transports.sip.dialogs import ALLOW, Dialog
from kombain.server.transports.sip.handlers import (
    ACCEPT,
    OPTION_PREFIX,
    MethodHandlers,
    call_options,
    parse_dtmf_body,
)
from kombain.server.transports.sip.message import SipError
from kombain.server.transports.sip.transactions import T1, T2, T4, TIMEOUT_64T1, ClientTx, ServerTx

__all__ = [
    "ACCEPT", "ALLOW", "OPTION_PREFIX", "T1", "T2", "T4", "TIMEOUT_64T1", "Action", "Addr", "CallEnded",
    "CallEstablished", "IncomingCall", "InfoDtmf", "Reoffer", "Send", "SipServerProtocol", "call_options",
    "parse_dtmf_body",
]
log = logging.getLogger(__name__)


class SipServerProtocol(MethodHandlers):
    """The UAS state machine: feed `datagram_received()` and `timer()`, perform what they return."""

    def __init__(self, *, local_host: str, local_port: int, user_agent: str = "kombain",
                 auth: DigestAuth | None = None, max_message_bytes: int = 8192,
                 max_headers: int = 64, clock: Callable[[], float] = time.monotonic,
                 max_calls: int = 1000, max_transactions: int = 5000,
                 force_rport: bool = False, retry_after_s: int = 5) -> None:
        super().__init__(auth=auth, max_calls=max_calls, local_host=local_host, local_port=local_port,
                         user_agent=user_agent, max_message_bytes=max_message_bytes, max_headers=max_headers,
                         clock=clock, max_transactions=max_transactions, force_rport=force_rport,
                         retry_after_s=retry_after_s)

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
                if isinstance(obj, ServerTx):
                    actions += self._server_tx_timer(obj, now)
                elif isinstance(obj, ClientTx):
                    actions += self._client_tx_timer(obj, now)
                elif isinstance(obj, Dialog):
                    actions += self._call_timer(obj, now)
        finally:
            self._tick = None
        return actions

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
