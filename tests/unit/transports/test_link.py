"""The call lifecycle every transport uses (server/transports/link.py), with a fake host, call,
port and clock: peer hang-up, watchdog, drain with a spoken goodbye, play-out wait, malformed
input, a slow reader and a broken peer. No models, no sockets, no real waiting."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from kombain.server.host import CallRefused
from kombain.server.transports.link import CallLink, PeerError, SlowPeer, call_logger
from kombain.streaming.call import Call, CallConfig, HangupEvent
from tests.fakes.call import FakeCall, FakeHost
from tests.fakes.clock import FakeClock
from tests.fakes.ports import RecordingPort


class QueueLink(CallLink):
    """A transport whose peer is a queue: audio, 'say' (the call speaks), 'bye', 'bad', or an error."""

    def __init__(self, host: Any, clock: FakeClock, *, peer_timeout_s: float = 10.0, playout_s: float = 1.0) -> None:
        super().__init__(host, "test", call_logger("kombain.test", "call_t"), peer_timeout_s=peer_timeout_s,
                         playout_s=playout_s, clock=clock, sleep=clock.sleep)
        self.inbox: asyncio.Queue[object] = asyncio.Queue(maxsize=16)
        self.hung_up: list[tuple[str, bool]] = []
        self.refused: list[PeerError] = []
        self.failures: list[BaseException] = []
        self.port = RecordingPort()

    async def read(self, call: Call) -> str:
        fake: FakeCall = call  # type: ignore[assignment]
        while True:
            msg = await self.inbox.get()
            if msg == "bye":
                return "peer_hangup"
            if msg == "bad":
                raise PeerError("a malformed frame")
            if isinstance(msg, Exception):
                raise msg
            if msg == "say":
                fake.say("resp_1", 300)
                continue
            self.heard()
            await call.receive_audio(np.zeros(160, np.float32), 8000)

    async def hang_up(self, reason: str, by_peer: bool) -> None:
        self.hung_up.append((reason, by_peer))

    async def refuse(self, exc: PeerError) -> None:
        self.refused.append(exc)

    def failed(self, exc: BaseException) -> None:
        self.failures.append(exc)


async def run_link(link: QueueLink) -> tuple[FakeCall, asyncio.Task[None]]:
    """Open the link's call and serve it in a task; returns once the call is running."""
    opened: asyncio.Future[FakeCall] = asyncio.get_running_loop().create_future()

    async def life() -> None:
        async with link.open(CallConfig(), output=link.port) as call:
            opened.set_result(call)  # type: ignore[arg-type]
            await link.serve(call)

    task = asyncio.ensure_future(life())
    call = await asyncio.wait_for(opened, 1)
    await asyncio.wait_for(call.started.wait(), 1)
    return call, task


async def test_the_peer_hangs_up() -> None:
    link = QueueLink(FakeHost(), FakeClock())
    call, task = await run_link(link)
    await link.inbox.put(np.zeros(1))
    await link.inbox.put("bye")
    await asyncio.wait_for(task, 1)
    assert link.reason == "peer_hangup" and link.hung_up == [("peer_hangup", True)]
    assert call.closed.is_set() and call.audio_s > 0


async def test_the_watchdog_ends_a_silent_peer() -> None:
    clock = FakeClock()
    link = QueueLink(FakeHost(), clock, peer_timeout_s=10.0)
    start = clock()
    _call, task = await run_link(link)
    await asyncio.wait_for(task, 1)
    assert link.hung_up == [("peer_gone", False)]
    assert 10.0 < clock() - start <= 11.0  # a tick after the limit, not real time


async def test_the_watchdog_spares_a_peer_allowed_to_be_silent() -> None:
    class OnHold(QueueLink):
        silent_ok = True

        def peer_may_be_silent(self) -> bool:
            return self.silent_ok

    clock = FakeClock()
    link = OnHold(FakeHost(), clock, peer_timeout_s=2.0)
    _call, task = await run_link(link)
    while clock.now < 1060:  # a minute on hold
        await asyncio.sleep(0)
    assert not task.done()
    link.silent_ok = False
    await asyncio.wait_for(task, 1)
    assert link.hung_up == [("peer_gone", False)]


async def test_a_busy_call_counts_as_activity_where_the_transport_says_so() -> None:
    class Listening(QueueLink):
        busy_is_activity = True
        idle_reason = "idle_timeout"

    clock = FakeClock()
    link = Listening(FakeHost(), clock, peer_timeout_s=5.0)
    call, task = await run_link(link)
    call.busy = True  # a long reply the client listens to without sending
    while clock.now < 1030:
        await asyncio.sleep(0)
    assert not task.done()
    call.busy = False
    await asyncio.wait_for(task, 1)
    assert link.hung_up == [("idle_timeout", False)]


async def test_drain_speaks_a_goodbye_and_hangs_up_once_it_has_played() -> None:
    host = FakeHost()
    link = QueueLink(host, FakeClock())
    call, task = await run_link(link)
    host.end_all("server_shutting_down")
    assert call.hangup_reason == "server_shutting_down"
    for _ in range(10):
        await asyncio.sleep(0)
    assert not task.done() and link.port.marks_out == 2  # waiting for the goodbye to be heard
    link.port.echo()
    await asyncio.wait_for(task, 1)
    assert link.hung_up == [("server_shutting_down", False)]
    assert call.reports[-1] == ("resp_goodbye", 200, False)


async def test_drain_of_a_call_that_cannot_speak_hangs_up_at_once() -> None:
    host = FakeHost(speaks=False)
    link = QueueLink(host, FakeClock())
    call, task = await run_link(link)
    host.end_all("session_expired")
    await asyncio.wait_for(task, 1)
    assert link.hung_up == [("session_expired", False)] and call.hangup_reason is None


async def test_a_transport_that_says_why_itself_gets_no_spoken_goodbye() -> None:
    class Events(QueueLink):
        spoken_goodbye = False

    host = FakeHost()
    link = Events(host, FakeClock())
    call, task = await run_link(link)
    call.say("resp_1", 300)  # a reply still playing is not waited for
    host.end_all("server_shutting_down")
    await asyncio.wait_for(task, 1)
    assert link.hung_up == [("server_shutting_down", False)] and call.hangup_reason is None


async def test_the_bots_hangup_waits_for_playout_within_its_bound() -> None:
    link = QueueLink(FakeHost(), FakeClock(), playout_s=0.02)
    call, task = await run_link(link)
    await link.inbox.put("say")
    await asyncio.sleep(0)
    call.emit(HangupEvent("hangup"))  # never echoed: the bound ends the wait
    await asyncio.wait_for(task, 1)
    assert link.hung_up == [("hangup", False)] and link.port.marks_out == 3


async def test_a_malformed_frame_refuses_the_peer() -> None:
    link = QueueLink(FakeHost(), FakeClock())
    call, task = await run_link(link)
    await link.inbox.put("bad")
    await asyncio.wait_for(task, 1)
    assert [str(e) for e in link.refused] == ["a malformed frame"] and link.hung_up == []
    assert link.reason == "peer_error" and call.closed.is_set()


async def test_a_slow_reader_is_disconnected() -> None:
    link = QueueLink(FakeHost(), FakeClock())
    link.port.capacity = 2
    _call, task = await run_link(link)
    await link.inbox.put("say")
    await asyncio.wait_for(task, 1)
    assert len(link.refused) == 1 and isinstance(link.refused[0], SlowPeer)
    assert link.reason == "peer_not_reading"


async def test_a_broken_peer_ends_only_its_call() -> None:
    link = QueueLink(FakeHost(), FakeClock())
    _call, task = await run_link(link)
    await link.inbox.put(ConnectionResetError("reset by peer"))
    await asyncio.wait_for(task, 1)
    assert [type(e) for e in link.failures] == [ConnectionResetError] and link.reason == "error"


async def test_the_first_reason_is_kept() -> None:
    link = QueueLink(FakeHost(speaks=False), FakeClock())
    _call, task = await run_link(link)
    link.finish("peer_gone")
    link.end("server_shutting_down")
    await asyncio.wait_for(task, 1)
    assert link.hung_up == [("peer_gone", False)]


async def test_a_refused_call_never_serves() -> None:
    link = QueueLink(FakeHost(refuse="server_full"), FakeClock())
    with pytest.raises(CallRefused):
        async with link.open(CallConfig(), output=link.port):
            raise AssertionError("opened")
    assert link.call is None


async def test_a_slow_reader_found_deep_in_the_call_is_still_a_slow_reader() -> None:
    class Nested(QueueLink):
        def tasks(self, call: Call) -> list[Any]:
            async def inner() -> None:
                async with asyncio.TaskGroup() as tg:  # as when the call's own tasks find the queue full
                    tg.create_task(self._overflow())
            return [inner()]

        async def _overflow(self) -> None:
            await asyncio.sleep(0)
            raise SlowPeer("the peer is not reading")

    link = Nested(FakeHost(), FakeClock())
    _call, task = await run_link(link)
    await asyncio.wait_for(task, 1)
    assert [type(e) for e in link.refused] == [SlowPeer] and link.reason == "peer_not_reading"
