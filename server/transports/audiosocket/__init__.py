"""Asterisk AudioSocket: a TCP listener (`KOMBAIN_AUDIOSOCKET_LISTEN`) and per-call options set
ahead over HTTP."""

from kombain.server.transports.audiosocket.connection import router, start
from kombain.server.transports.spec import TransportSpec

TRANSPORT = TransportSpec(name="audiosocket", routers=(router,), start=start)
