"""One call's life on one peer, written once for every transport.

`CallLink` opens the call through the host, runs it in one TaskGroup beside the peer's reader,
the transport's own tasks and a peer watchdog, and ends it one way whoever ends it: the peer
(its reader returns why), the bot (a hang-up after its goodbye), the host (session deadline or
drain: a spoken goodbye where the call can speak), or the watchdog (a peer silent too long). A
call the server ends is let play out (bounded) before the transport hangs up. A transport
subclasses it and provides only what is its own:

- `read(call)`: the peer's messages into the call until the peer ends it; returns why,
- `tasks(call)`: what else lives as long as the call (a writer, a pacer, a play-out clock),
- `hang_up(reason, by_peer)`: how its wire says the call is over (HANGUP, BYE, a close),
- `refuse(exc)`: how it closes on a peer that misbehaves (a `PeerError`).

Time is injected (`clock`, `sleep`), so the lifecycle is tested without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from kombain.server.host import CallHost
from kombain.streaming.call import AudioOutput, Call, CallConfig, CallEvent, HangupEvent
from kombain.streaming.output import OutputBase
from kombain.streaming.responders import Responder

_E = TypeVar("_E", bound=BaseException)
SERVER_ENDS = ("server_shutting_down", "session_expired")  # the host ends the call


class PeerError(Exception):
    """The peer misbehaves and is disconnected (`code` names why, for metrics and close frames)."""

    code = "peer_error"


class SlowPeer(PeerError):
    """The peer stopped reading: its send queue is full."""

    code = "peer_not_reading"


class TooManyErrors(PeerError):
    """The peer keeps sending what cannot be parsed."""

    code = "too_many_errors"


class CallLink:
    """One call on one peer: open it (`open`), then `serve(call)` for its life; `end(reason)` and
    `finish(reason)` from anywhere."""

    spoken_goodbye = True  # a call the server ends hears why (phones); False: hang_up says it
    idle_reason = "peer_gone"  # why the watchdog ends the call
    busy_is_activity = False  # True: a turn or a reply in progress counts as hearing from the peer
    watch_tick_s = 1.0

    def __init__(self, host: CallHost, transport: str, log: logging.LoggerAdapter[logging.Logger], *,
                 peer_timeout_s: float = 0.0, playout_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.host, self.settings, self.transport, self.log = host, host.settings, transport, log
        self.peer_timeout_s = peer_timeout_s  # 0: no watchdog
        self.playout_s = playout_s if playout_s is not None else host.settings.response_lead_ms / 1000 + 1.5
        self._clock, self._sleep = clock, sleep
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.last_heard = clock()
        self.call: Call | None = None
        self.output: AudioOutput | None = None
        self.reason: str | None = None

    # --- what a transport provides ---------------------------------------------------------------

    async def read(self, call: Call) -> str:
        """The peer's messages into the call until the peer ends it; returns why. By default the
        peer is read elsewhere (datagrams, callbacks) and ends the call with `finish`."""
        await asyncio.Future()  # never: ended only by `finish`
        raise AssertionError("unreachable")

    def tasks(self, call: Call) -> list[Coroutine[Any, Any, None]]:
        """What runs beside the call for its life (cancelled once it is over)."""
        return []

    async def hang_up(self, reason: str, by_peer: bool) -> None:
        """Tell the peer the call is over (when `by_peer`, it knows: usually nothing to say)."""

    async def refuse(self, exc: PeerError) -> None:
        """Disconnect a peer that misbehaves."""
        self.log.warning("disconnecting: %s", exc)

    def tick(self) -> None:
        """Each watchdog tick (e.g. counters into the metrics)."""

    def peer_may_be_silent(self) -> bool:
        """True while silence from the peer is expected (e.g. a SIP caller on hold)."""
        return False

    # --- events ----------------------------------------------------------------------------------

    def heard(self) -> None:
        """The peer sent something (media, an event): it is still there."""
        self.last_heard = self._clock()

    def end(self, reason: str) -> None:
        """End the call for the host (deadline, drain) or the watchdog: where it can speak, a call
        the server ends is told why first, and ends once that has been said."""
        call = self.call
        if self.spoken_goodbye and reason in SERVER_ENDS and call is not None and call.speaks:
            goodbye = (self.settings.shutdown_goodbye if reason == "server_shutting_down"
                       else "This call has reached its time limit. Goodbye.")
            self.log.info("ending the call (%s) with a spoken goodbye", reason)
            call.end(reason, goodbye=goodbye)
            return
        self.finish(reason)

    def finish(self, reason: str) -> None:
        """The call is over now (the first reason given is the one kept)."""
        if not self.ended.done():
            self.ended.set_result(reason)

    def on_event(self, ev: CallEvent) -> None:
        """The call's events, for a transport that renders none: a hang-up ends the call."""
        if isinstance(ev, HangupEvent):
            self.finish(ev.reason)

    # --- the call's life -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def open(self, config: CallConfig, *, emit: Callable[[CallEvent], None] | None = None,
                   output: AudioOutput | None = None, responder: Responder | None = None,
                   call_id: str | None = None) -> AsyncIterator[Call]:
        """Open the call through the host (which may refuse: `CallRefused`), for the block's life."""
        async with self.host.open_call(self.transport, config, emit or self.on_event, end=self.end, output=output,
                                       responder=responder, call_id=call_id) as call:
            self.call, self.output = call, output
            yield call

    async def serve(self, call: Call) -> None:
        """The call's life: call, reader, tasks and watchdog in one TaskGroup until either side
        ends it; then the play-out of what the server said last, the hang-up, and nothing left."""
        try:
            async with asyncio.TaskGroup() as tg:
                runner = tg.create_task(call.run())
                helpers = [tg.create_task(c) for c in self.tasks(call)]
                watchdog = tg.create_task(self.watchdog()) if self.peer_timeout_s > 0 else None
                read = asyncio.ensure_future(self.read(call))
                try:
                    await asyncio.wait({read, self.ended}, return_when=asyncio.FIRST_COMPLETED)
                    by_peer = read.done()
                    if by_peer:
                        reason = read.result()
                    else:
                        reason = self.ended.result()
                        if reason == "hangup" or (self.spoken_goodbye and reason in SERVER_ENDS):
                            await self.wait_for_playout()
                finally:
                    read.cancel()
                self.reason = reason
                self.log.info("call ended: %s", reason)
                call.close()
                if watchdog is not None:
                    watchdog.cancel()
                await self.hang_up(reason, by_peer)
                for task in helpers:
                    task.cancel()
                runner.cancel()
        except* PeerError as eg:
            peer_error = _first(eg)
            self.reason = self.reason or peer_error.code
            await self.refuse(peer_error)
        except* Exception as eg:  # one call's broken peer ends that call, never the server
            self.reason = self.reason or "error"
            self.failed(_first(eg))

    def failed(self, exc: BaseException) -> None:
        """The call ended on an error of its peer's I/O (a reset connection, a broken socket)."""
        self.log.info("ended: %r", exc)

    async def wait_for_playout(self) -> None:
        """Until the peer has played what was sent (its goodbye), or `playout_s`."""
        output = self.output
        if not isinstance(output, OutputBase):
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.playout_s):
                await output.wait_for_playout()

    async def watchdog(self) -> None:
        """A peer that sends nothing for `peer_timeout_s` has gone (phones stream silence too)."""
        limit = self.peer_timeout_s
        while True:
            await self._sleep(min(self.watch_tick_s, limit / 4))
            self.tick()
            call = self.call
            if self.peer_may_be_silent() or (self.busy_is_activity and call is not None and call.busy):
                self.heard()
            if self._clock() - self.last_heard > limit:
                self.log.info("nothing from the peer for %.0f s: ending the call (%s)", limit, self.idle_reason)
                self.end(self.idle_reason)
                return


def _first(eg: BaseExceptionGroup[_E]) -> _E:
    """The first exception of a (possibly nested) group: the one that ended the call."""
    exc: BaseException = eg
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc  # type: ignore[return-value]


def call_logger(name: str, call_id: str) -> logging.LoggerAdapter[logging.Logger]:
    """A logger whose lines carry the call id."""
    return _CallLog(logging.getLogger(name), {"call_id": call_id})


class _CallLog(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"call {self.extra['call_id']}: {msg}", kwargs  # type: ignore[index]
