"""Callers that vanish without hanging up: each call ends and releases everything it held."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import httpx
import pytest

from tests.conftest import ROOT
from tests.webrtc.inner.conftest import metric, webrtc_active

pytestmark = pytest.mark.asyncio

CALLERS = 5


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _vanishing_caller(url: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.webrtc.inner.vanish", url], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
    if not line.startswith(b"connected"):
        proc.kill()
        raise AssertionError(f"caller did not connect: {line!r} {proc.stderr.read()!r}")  # type: ignore[union-attr]
    return proc


async def _settle(server, what: str, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while webrtc_active(server) != 0:
            await asyncio.sleep(0.2)
    assert webrtc_active(server) == 0, what


async def test_vanished_peers_are_cleaned_up(rtc_server):
    await _settle(rtc_server, "no calls left from earlier tests")
    await asyncio.sleep(0.5)
    fds_before = open_fds(rtc_server.proc.pid)
    gone_before = metric(rtc_server, "kombain_webrtc_calls_ended_total", '{reason="peer_gone"}')
    callers = await asyncio.gather(*(_vanishing_caller(rtc_server.url) for _ in range(CALLERS)))
    assert webrtc_active(rtc_server) == CALLERS
    assert open_fds(rtc_server.proc.pid) > fds_before  # each call holds sockets while it lives
    for proc in callers:
        proc.send_signal(signal.SIGKILL)  # no DELETE, no DTLS close: the peer just disappears
        proc.wait()
    await _settle(rtc_server, "every vanished call ended")
    assert metric(rtc_server, "kombain_webrtc_calls_ended_total", '{reason="peer_gone"}') == gone_before + CALLERS
    async with asyncio.timeout(10):  # sockets are closed as the calls release
        while open_fds(rtc_server.proc.pid) > fds_before:
            await asyncio.sleep(0.2)
    assert open_fds(rtc_server.proc.pid) <= fds_before
    ready = await asyncio.to_thread(httpx.get, rtc_server.url + "/readyz", timeout=5)
    assert ready.status_code == 200
