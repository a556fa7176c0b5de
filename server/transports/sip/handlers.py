"""The method handlers: INVITE (and re-INVITE), ACK, CANCEL, BYE, OPTIONS, INFO, the responses
to our BYE, and what they read from a request (the SDP offer, DTMF bodies, X-Kombain-* options)."""

from __future__ import annotations

import secrets
from typing import Any

from kombain.server.transports.sip.actions import (
    Action,
    Addr,
    CallEstablished,
    IncomingCall,
    InfoDtmf,
    Reoffer,
    Send,
)
from kombain.server.transports.sip.auth import DigestAuth
from kombain.server.transports.sip.dialogs import ALLOW, Dialog, Dialogs
from kombain.server.transports.sip.message import (
    SipError,
    SipMessage,
    Via,
    parse_name_addr,
    parse_via,
    split_list,
    stamp_via,
    uri_scheme,
)
from kombain.server.transports.sip.sdp import SdpError, SdpOffer, choose_codec, parse_offer
from kombain.server.transports.sip.transactions import T4, ServerTx, random_token

ACCEPT = "application/sdp, application/dtmf-relay, application/dtmf"
# Methods we recognise but do not serve get 405; the rest 501 (section 21.4.6 / 21.5.2).
_KNOWN_METHODS = frozenset(
    {"REGISTER", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "UPDATE", "PRACK", "PUBLISH"}
)
_DTMF_TYPES = ("application/dtmf-relay", "application/dtmf")
_DTMF_DIGITS = "0123456789*#ABCD"
# RFC 4733 event numbers some gateways put in Signal= instead of the character.
_DTMF_EVENTS = {"10": "*", "11": "#", "12": "A", "13": "B", "14": "C", "15": "D"}


class MethodHandlers(Dialogs):
    """Requests dispatched by method, on top of the dialogs and transactions."""

    def __init__(self, *, auth: DigestAuth | None, **dialog_options: Any) -> None:
        super().__init__(**dialog_options)
        self.auth = auth
        # Set by the I/O layer while the node drains or is full: out-of-dialog OPTIONS get 503.
        self.unavailable = False

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

    def _on_invite(self, msg: SipMessage, tx: ServerTx, source: Addr) -> list[Action]:
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
        local_tag = random_token()
        call = Dialog(
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

    def _on_reinvite(self, msg: SipMessage, tx: ServerTx) -> list[Action]:
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
            return self._respond(tx, 481, "Call/Transaction Does Not Exist", to_tag=random_token())
        call = self._calls.get(msg.call_id)
        owned = call is not None and invite_key in (call.invite_key, call.reinvite_key)
        to_tag = call.local_tag if call is not None and owned else random_token()
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

    def _on_bye(self, msg: SipMessage, tx: ServerTx) -> list[Action]:
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

    def _on_options(self, msg: SipMessage, tx: ServerTx) -> list[Action]:
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

    def _on_info(self, msg: SipMessage, tx: ServerTx) -> list[Action]:
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

