"""Wyoming (Home Assistant's voice protocol): speech to text, text to speech and conversation
over TCP events (`KOMBAIN_WYOMING_LISTEN`), advertised by zeroconf. See docs/wyoming.md."""

from kombain.server.transports.spec import TransportSpec
from kombain.server.transports.wyoming.listener import start

TRANSPORT = TransportSpec(name="wyoming", start=start)
