"""What the SIP state machine hands its I/O layer and its application: datagrams to send and
call events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from kombain.server.transports.sip.sdp import SdpOffer

Addr: TypeAlias = tuple[str, int]


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
