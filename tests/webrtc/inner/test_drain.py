"""SIGTERM during a live WebRTC call: the caller is told on the data channel, then hung up; exit 0."""

from __future__ import annotations

import asyncio
import signal

import pytest

from kombain.clients.webrtc_client import WebRTCCaller
from tests.conftest import start_server, stop_server
from tests.webrtc.inner.conftest import HOSTS, SERVER_ENV

pytestmark = pytest.mark.asyncio


async def test_sigterm_drains_a_webrtc_call(tmp_path):
    server = await asyncio.to_thread(start_server, tmp_path, {**SERVER_ENV, "KOMBAIN_DRAIN_SECONDS": "2"})
    try:
        async with WebRTCCaller(server.url, hosts=HOSTS) as caller:
            await caller.connect()
            await caller.wait_for("session.created", timeout=10)
            server.proc.send_signal(signal.SIGTERM)
            err = await caller.wait_for("error", timeout=15)
            assert err[0].event["error"]["code"] == "server_shutting_down"
            async with asyncio.timeout(10):
                while caller.pc.connectionState not in ("closed", "failed"):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        assert await asyncio.to_thread(server.proc.wait, 30) == 0
    finally:
        if server.proc.poll() is None:
            await asyncio.to_thread(stop_server, server)
    assert "Traceback" not in server.log()
