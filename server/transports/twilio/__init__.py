"""Twilio Media Streams (`/v1/telephony/twilio`) and its TwiML webhook."""

from kombain.server.transports.spec import TransportSpec
from kombain.server.transports.twilio.connection import router

TRANSPORT = TransportSpec(name="twilio", routers=(router,))
