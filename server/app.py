"""The ASGI app: settings, metrics and services built in the lifespan, routers wired to them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

from kombain.server.auth import Authenticator
from kombain.server.host import CallHost
from kombain.server.metrics import Metrics
from kombain.server.peers import PeerAllowList
from kombain.server.quotas import Quotas
from kombain.server.settings import Settings

log = logging.getLogger("kombain")


@dataclass
class AppState:
    """What request handlers reach through `request.app.state.kombain`."""

    settings: Settings
    metrics: Metrics
    # Filled in by the lifespan as each component comes up; handlers check `ready`.
    services: dict[str, Any] = field(default_factory=dict)
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


def create_app(settings: Settings, *, metrics: Metrics | None = None) -> FastAPI:
    """Build the app. Models load in the background; /readyz turns true when they are in."""
    from kombain.server import (
        client_secrets_api,
        errors,
        health,
        models_api,
        openapi,
        realtime_ws,
        speech_api,
        transcriptions,
        web_page,
        webrtc,
    )
    from kombain.server.lane import api as lane_api
    from kombain.server.transports import asterisk_ws, audiosocket, twilio

    state = AppState(settings=settings, metrics=metrics or Metrics())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            from kombain.server import components

            stack.push_async_callback(state.quotas.aclose)  # last: after every call has ended
            loader = asyncio.create_task(components.start_all(state, stack), name="load-models")
            try:
                yield
            finally:
                state.draining = True
                if not loader.done():
                    loader.cancel()
                # The loader's own end (cancelled or failed) is collected; a cancellation of the
                # lifespan itself still propagates.
                await asyncio.gather(loader, return_exceptions=True)

    app = FastAPI(title="kombain", version="0.1.0", lifespan=lifespan)
    app.state.kombain = state
    app.include_router(health.router)
    app.include_router(realtime_ws.router)
    app.include_router(webrtc.router)
    app.include_router(client_secrets_api.router)
    app.include_router(transcriptions.router)
    app.include_router(speech_api.router)
    app.include_router(models_api.router)
    app.include_router(lane_api.router)
    app.include_router(twilio.router)
    app.include_router(asterisk_ws.router)
    app.include_router(audiosocket.router)
    web_page.install(app)
    errors.install(app)
    openapi.install(app)
    return app
