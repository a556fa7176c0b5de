"""What a transport package tells the app about itself: its name, its routes, its start-up.

Each package under `server/transports/` exports `TRANSPORT = TransportSpec(...)`; the app, the
start-up and the metrics loop over them (`server/transports/__init__.py: discover`) and name
no transport themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter

# (app state, the lifespan's exit stack) -> started; what it enters on the stack is left at shutdown.
Starter = Callable[[Any, contextlib.AsyncExitStack], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class TransportSpec:
    """One transport: `name` labels its calls in the metrics and names it in
    KOMBAIN_COMPONENTS_DISABLED; `routers` are its HTTP/WebSocket entries; `start` brings up
    what it needs past the routes (a listener, a connection manager), after the models."""

    name: str
    routers: Sequence[APIRouter] = ()
    start: Starter | None = None
