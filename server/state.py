"""The app's state, reached by request handlers as `request.app.state.kombain`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from kombain.server.auth import Authenticator
from kombain.server.host import CallHost
from kombain.server.metrics import Metrics
from kombain.server.peers import PeerAllowList
from kombain.server.quotas import Quotas
from kombain.server.services import Services
from kombain.server.settings import Settings


@dataclass
class AppState:
    """What request handlers reach through `request.app.state.kombain`."""

    settings: Settings
    metrics: Metrics
    # Published by the lifespan as each component comes up; handlers check `ready` or for None.
    services: Services = field(default_factory=Services)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    load_error: str | None = None
    host: CallHost = field(init=False)
    auth: Authenticator = field(init=False)
    quotas: Quotas = field(init=False)

    def __post_init__(self) -> None:
        self.host = CallHost(self.settings, self.metrics, self.services)
        # Bad JWT keys or limits fail here, at start-up, as a ValueError.
        self.auth = Authenticator(self.settings)
        s = self.settings
        self.quotas = Quotas(s.rate_limit, s.key_max_calls, s.key_max_queued_jobs, storage=s.rate_limit_storage,
                             on_storage_error=self.metrics.rate_limit_store_errors.inc)
        PeerAllowList(s.audiosocket_allow, "audiosocket_allow")
        PeerAllowList(s.sip_allow, "sip_allow")
        if s.max_audio_speed != 0 and (s.max_audio_speed < 1 or s.max_audio_burst_s <= 0):
            raise ValueError("KOMBAIN_MAX_AUDIO_SPEED must be 0 (no limit) or at least 1 (real time), "
                             "and KOMBAIN_MAX_AUDIO_BURST_S positive")

    @property
    def draining(self) -> bool:
        return self.host.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self.host.draining = value

    def mark_ready(self) -> None:
        self.host.ready = True
        self.ready.set()
