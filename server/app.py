"""The ASGI app: settings, metrics and services built in the lifespan, routers wired to them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from kombain.server import components
from kombain.server.body_limit import FORM_OVERHEAD, BodyLimit
from kombain.server.metrics import Metrics
from kombain.server.origin import OriginCheck, parse_allowed, public_origin
from kombain.server.settings import Settings
from kombain.server.state import AppState

log = logging.getLogger("kombain")


def create_app(settings: Settings, *, metrics: Metrics | None = None) -> FastAPI:
    """Build the app. Models load in the background; /readyz turns true when they are in."""
    from kombain.server import (
        client_secrets_api,
        errors,
        health,
        models_api,
        openapi,
        speech_api,
        transcriptions,
        web_page,
    )
    from kombain.server.lane import api as lane_api
    from kombain.server.transports import discover

    transports = discover()
    state = AppState(settings=settings, metrics=metrics or Metrics())
    for transport in transports:
        state.metrics.add_transport(transport.name)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(state.quotas.aclose)  # last: after every call has ended
            loader = asyncio.create_task(components.start_all(state, stack, transports), name="load-models")
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
    app.include_router(client_secrets_api.router)
    app.include_router(transcriptions.router)
    app.include_router(speech_api.router)
    app.include_router(models_api.router)
    app.include_router(lane_api.router)
    for transport in transports:
        for router in transport.routers:
            app.include_router(router)
    web_page.install(app)
    errors.install(app)
    openapi.install(app)
    # Every HTTP body is counted as it arrives: a chunked upload is refused at the limit, not read whole.
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + FORM_OVERHEAD)
    # Outermost: a page of another origin gets its 403 before anything reads its request.
    app.add_middleware(OriginCheck, allowed=parse_allowed(settings.allowed_origins) | public_origin(settings.public_url))
    return app
