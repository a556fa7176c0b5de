"""The Wyoming listener in-process with the real models and short limits: an idle limit for a
client that never sends audio-stop, the peer allow-list, admission, and a loopback-only zeroconf
advertisement that a browser finds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from wyoming.audio import AudioChunk, AudioStart
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe
from wyoming.tts import Synthesize

from kombain.server.host import CallHost
from kombain.server.metrics import Metrics
from kombain.server.services import Services, SpeechToText
from kombain.server.settings import Settings
from kombain.server.transports.wyoming.listener import WyomingServer

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def services(tmp_path_factory) -> Services:
    from kombain.streaming.vad import SileroVadModel
    from kombain.streaming.whisper_runtime import WhisperRuntime

    runtime = WhisperRuntime.load("tiny.en", data_dir=Path(tmp_path_factory.mktemp("data")), workers=1)
    out = Services()
    out.stt = SpeechToText(runtime, SileroVadModel.load())
    return out


async def serve(services: Services, **settings) -> tuple[WyomingServer, CallHost, Metrics]:
    s = Settings.from_env({}, wyoming_listen="127.0.0.1:0", **settings)
    metrics = Metrics()
    host = CallHost(s, metrics, services)
    host.ready = True
    server = WyomingServer(s, metrics, host, services)
    await server.start()
    return server, host, metrics


async def test_a_client_that_never_sends_audio_stop_is_timed_out(services):
    server, host, _ = await serve(services, wyoming_idle_timeout_s=0.5)
    try:
        async with AsyncTcpClient("127.0.0.1", server.address[1]) as c:
            await c.write_event(AudioStart(rate=16000, width=2, channels=1).event())
            await c.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=bytes(3200)).event())
            await asyncio.sleep(0.1)
            assert host.count == 1  # the transcription is a call in the host
            async with asyncio.timeout(10):
                ev = await c.read_event()
                assert ev is not None and ev.type == "error" and ev.data["code"] == "timeout", ev
                assert await c.read_event() is None  # closed
        async with asyncio.timeout(5):
            while host.count:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    finally:
        await server.aclose()


async def test_the_drain_ends_a_request_still_running(services):
    server, host, _ = await serve(services)
    try:
        async with AsyncTcpClient("127.0.0.1", server.address[1]) as c:
            await c.write_event(AudioStart(rate=16000, width=2, channels=1).event())
            await c.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=bytes(3200)).event())
            await asyncio.sleep(0.1)
            assert host.count == 1
            drain = asyncio.create_task(host.drain(0.3, goodbye_s=5))
            async with asyncio.timeout(10):
                ev = await c.read_event()
                assert ev is not None and ev.data["code"] == "server_shutting_down", ev
                assert await c.read_event() is None
                await drain
        assert host.count == 0
    finally:
        await server.aclose()


async def test_peers_outside_the_allow_list_are_refused(services):
    server, _, _ = await serve(services, wyoming_allow="10.0.0.0/8")
    try:
        async with AsyncTcpClient("127.0.0.1", server.address[1]) as c:
            await c.write_event(Describe().event())
            async with asyncio.timeout(5):
                ev = await c.read_event()
                assert ev is not None and ev.data["code"] == "forbidden"
                assert await c.read_event() is None
    finally:
        await server.aclose()


async def test_requests_are_refused_when_the_node_is_full_or_draining(services):
    server, host, metrics = await serve(services, max_sessions=0)
    try:
        async with AsyncTcpClient("127.0.0.1", server.address[1]) as c:
            await c.write_event(AudioStart(rate=16000, width=2, channels=1).event())
            ev = await asyncio.wait_for(c.read_event(), 5)
            assert ev is not None and ev.data["code"] == "server_full"
            host.draining = True
            await c.write_event(Synthesize(text="hello").event())  # no voices loaded here: refused first
            ev = await asyncio.wait_for(c.read_event(), 5)
            assert ev is not None and ev.type == "error"
            await c.write_event(Describe().event())
            ev = await asyncio.wait_for(c.read_event(), 5)
            assert ev is not None and ev.type == "info"  # describe needs no call
        assert metrics.sessions_rejected.labels("wyoming", "full")._value.get() == 1
    finally:
        await server.aclose()


async def test_zeroconf_advertises_on_loopback_when_asked(services):
    zeroconf = pytest.importorskip("zeroconf")
    from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

    server, _, _ = await serve(services, wyoming_zeroconf="on")  # on 127.0.0.1: loopback only
    try:
        assert server._ad is not None, "advertisement failed (see the log)"
        browser = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=zeroconf.IPVersion.V4Only)
        try:
            name = next(iter(server._ad._info.name.split(".")))
            info = AsyncServiceInfo("_wyoming._tcp.local.", f"{name}._wyoming._tcp.local.")
            assert await info.async_request(browser.zeroconf, 3000)
            assert info.port == server.address[1] and info.parsed_addresses() == ["127.0.0.1"]
        finally:
            await browser.async_close()
    finally:
        await server.aclose()
    off, _, _ = await serve(services)  # auto on loopback: nothing advertised
    assert off._ad is None
    await off.aclose()
