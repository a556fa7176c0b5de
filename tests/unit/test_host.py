"""The call host (server/host.py) with fake calls: admission, the registry of live calls, the
session deadline and drain, for any transport. No models; milliseconds of time at most."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from kombain.server.host import CallHost, CallRefused
from kombain.server.metrics import Metrics
from kombain.server.settings import Settings
from kombain.streaming.call import CallConfig
from tests.fakes.call import FakeCall


def make_host(**settings: Any) -> CallHost:
    services = SimpleNamespace(stt=object(), tts=None, ivr_script=None)  # what admission looks at
    host = CallHost(Settings(**settings), Metrics(), services)  # type: ignore[arg-type]
    host._build = lambda transport, config, emit, output, responder, call_id: FakeCall(  # type: ignore[method-assign]
        emit, output, call_id=call_id or f"call_{transport}")
    host.ready = True
    return host


def rejected(host: CallHost, transport: str, reason: str) -> float:
    return host.metrics.sessions_rejected.labels(transport, reason)._value.get()


async def test_admission_refuses_with_a_reason() -> None:
    host = make_host(max_sessions=1)
    host.ready = False
    with pytest.raises(CallRefused) as exc:
        host.admit("sip")
    assert exc.value.code == "server_not_ready" and rejected(host, "sip", "not_ready") == 1
    host.ready = True
    async with host.open_call("sip", CallConfig(), lambda ev: None, end=lambda r: None, call_id="call_a"):
        with pytest.raises(CallRefused) as exc:
            host.admit("twilio")
        assert exc.value.code == "server_full" and exc.value.retry_after_s > 0
    host.draining = True
    with pytest.raises(CallRefused) as exc:
        host.admit("twilio")
    assert exc.value.code == "server_draining"


async def test_live_calls_are_registered_for_their_life() -> None:
    host = make_host()
    async with host.open_call("twilio", CallConfig(), lambda ev: None, end=lambda r: None, call_id="call_a") as a:
        async with host.open_call("sip", CallConfig(), lambda ev: None, end=lambda r: None, call_id="call_b"):
            assert host.count == 2 and host.by_transport() == {"twilio": 1, "sip": 1}
            live = host.get("call_a")
            assert live is not None and live.call is a and live.transport == "twilio"
            assert host.metrics.sessions_active.labels("sip")._value.get() == 1
    assert host.count == 0 and live.ended.is_set() and a.closed.is_set()  # type: ignore[attr-defined]
    assert host.metrics.sessions_active.labels("sip")._value.get() == 0


async def test_the_session_deadline_ends_the_call_through_its_transport() -> None:
    host = make_host(max_session_seconds=0.001)
    ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    async with host.open_call("sip", CallConfig(), lambda ev: None, end=ended.set_result):
        assert await asyncio.wait_for(ended, 1) == "session_expired"


async def test_drain_lets_calls_finish_then_ends_the_rest() -> None:
    host = make_host()
    reasons: list[str] = []
    quick, stubborn = asyncio.Event(), asyncio.Event()

    async def call(name: str, done: asyncio.Event) -> None:
        def end(reason: str) -> None:
            reasons.append(f"{name}:{reason}")
            done.set()  # the transport says goodbye and hangs up

        async with host.open_call("twilio", CallConfig(), lambda ev: None, end=end, call_id=name):
            await done.wait()

    tasks = [asyncio.ensure_future(call("quick", quick)), asyncio.ensure_future(call("stubborn", stubborn))]
    await asyncio.sleep(0)
    drain = asyncio.ensure_future(host.drain(deadline_s=0.01, goodbye_s=1))
    await asyncio.sleep(0)
    with pytest.raises(CallRefused):
        host.admit("twilio")  # refused from the first moment of the drain
    quick.set()  # hangs up by itself within the deadline
    await asyncio.wait_for(drain, 1)
    assert reasons == ["stubborn:server_shutting_down"] and host.count == 0
    await asyncio.gather(*tasks)
