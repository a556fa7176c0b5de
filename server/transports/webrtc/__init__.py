"""WebRTC (`POST /v1/realtime/calls`): SDP offer/answer, Opus tracks, and the realtime events on
the `oai-events` data channel."""

from kombain.server.transports.spec import TransportSpec
from kombain.server.transports.webrtc.endpoint import router, start

TRANSPORT = TransportSpec(name="webrtc", routers=(router,), start=start)
