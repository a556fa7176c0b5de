"""Graceful drain on SIGTERM/SIGINT, ahead of uvicorn's own shutdown.

uvicorn, told to exit, closes every WebSocket with 1012 before the app's lifespan even starts to
shut down, so live calls would be cut mid-sentence. Here the first signal starts a drain instead:
/readyz turns 503 and new calls are refused at once; live calls of every transport go on until
they end or `KOMBAIN_DRAIN_SECONDS` passes; the rest are told in their own protocol (an error
event and close 1001, or a spoken goodbye on a phone call); then uvicorn shuts down and the
process exits 0. A second signal skips what is left of the drain.

One stop is often delivered twice: Ctrl-C or `kill -TERM -PGID` reaches every process of the group,
and `make serve` forwards a SIGTERM it gets to the server as well. A signal within
`REPEAT_WINDOW_S` of the first is that same stop (no second log line, the drain goes on); a person
who means "now" presses Ctrl-C again later than that.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger("kombain.drain")

REPEAT_WINDOW_S = 1.0  # a signal this soon after the first is the same stop delivered twice


class DrainingServer(uvicorn.Server):
    """uvicorn's server, with a drain of live calls between the signal and the shutdown."""

    def __init__(self, config: uvicorn.Config, state: Any) -> None:
        super().__init__(config)
        self._state = state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None
        self._first_signal: float | None = None  # time.monotonic() of the signal that began the stop

    async def startup(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not recorded in _captured_signals: uvicorn would re-raise it after shutdown, and the
        # process would die of it instead of exiting 0 once the drain is done.
        now = time.monotonic()
        name = signal.Signals(sig).name
        if self._first_signal is not None and now - self._first_signal < REPEAT_WINDOW_S:
            log.debug("signal %s again within %.1f s: the same stop", name, REPEAT_WINDOW_S)
            return
        if self._first_signal is not None or self._loop is None or self.should_exit:
            log.info("signal %s again: shutting down now", name)
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True
            return
        self._first_signal = now
        # The host logs the drain itself (live calls, deadline, drained); this line says why.
        log.info("signal %s: refusing new calls (send it again to stop without waiting for calls)", name)
        self._state.draining = True  # /readyz says 503 from this instant
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self._drain is None:
            self._drain = asyncio.ensure_future(self._run_drain())

    async def _run_drain(self) -> None:
        try:
            await self._state.host.drain(self._state.settings.drain_seconds)
        except Exception:  # a failed drain must not keep the process alive
            log.exception("drain failed")
        finally:
            self.should_exit = True
