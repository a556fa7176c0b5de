"""SIP over UDP (`KOMBAIN_SIP_LISTEN`) with G.711 RTP, a jitter buffer and RFC 4733 digits."""

from kombain.server.transports.sip.connection import start
from kombain.server.transports.spec import TransportSpec

TRANSPORT = TransportSpec(name="sip", start=start)
