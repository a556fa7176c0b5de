"""OpenAI Realtime events over a WebSocket (`/v1/realtime`): the event protocol (pure), the
session that maps it onto a call, and the WebSocket connection."""

from kombain.server.transports.openai_realtime.connection import router
from kombain.server.transports.spec import TransportSpec

TRANSPORT = TransportSpec(name="websocket", routers=(router,))
