"""Asterisk chan_websocket (`/v1/telephony/asterisk`)."""

from kombain.server.transports.asterisk_ws.connection import router
from kombain.server.transports.spec import TransportSpec

TRANSPORT = TransportSpec(name="asterisk", routers=(router,))
