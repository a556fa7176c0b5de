"""End to end in headless Chromium: the page at / calls the server with a fake microphone."""

from __future__ import annotations

import asyncio
import wave

import numpy as np
import pytest
import soxr

from kombain.clients.realtime_client import read_wav
from tests.conftest import ROOT, SPEECH_DIR
from tests.webrtc.browser import Browser, find_chromium
from tests.webrtc.inner.conftest import webrtc_active

pytestmark = pytest.mark.asyncio

ARTIFACTS = ROOT / "artifacts"


def fake_microphone(path, clip, lead_s: float = 2.0, trail_s: float = 5.0) -> None:
    """Speech with silence around it at 48 kHz; Chromium loops the file as its microphone."""
    audio, rate = read_wav(clip)
    audio = soxr.resample(audio, rate, 48000)
    audio = np.concatenate([np.zeros(int(lead_s * 48000), np.float32), audio,
                            np.zeros(int(trail_s * 48000), np.float32)])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


async def poll(browser: Browser, expression: str, timeout: float, what: str):
    async with asyncio.timeout(timeout):
        while not (value := await browser.evaluate(expression)):
            await asyncio.sleep(0.2)
    assert value, what
    return value


async def test_browser_call(rtc_server, tmp_path):
    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    mic = tmp_path / "mic.wav"
    fake_microphone(mic, SPEECH_DIR / "arctic_a0009.wav")
    browser = await Browser.launch(binary, tmp_path / "profile", mic, tmp_path / "chromium.log")
    try:
        await browser.send("Page.enable")
        await browser.send("Page.navigate", url=rtc_server.url + "/")
        await poll(browser, "document.readyState === 'complete' && !!window.kombainStats", 20, "page loaded")
        assert await browser.evaluate("document.querySelector('[data-testid=hangup]').disabled")
        await browser.evaluate("document.querySelector('[data-testid=call]').click()", gesture=True)

        transcript = "document.querySelector('[data-testid=transcript]').innerText.toLowerCase()"
        await poll(browser, f"{transcript}.includes('across the table')", 60, "caller's words shown")
        await poll(browser, f"{transcript}.includes('you said')", 30, "the bot's reply shown as text")
        status = await browser.evaluate("document.querySelector('[data-testid=status]').innerText")
        assert "connected" in status, status
        stats = await poll(browser, "window.kombainStats().then(s => s.inbound && s.inbound.totalAudioEnergy > 0.01"
                                    " && s.inbound.bytesReceived > 10000 ? s : null)", 30, "reply audio received")
        assert stats["state"] == "connected" and stats["outbound"]["bytesSent"] > 10000, stats
        ARTIFACTS.mkdir(exist_ok=True)
        await browser.screenshot(ARTIFACTS / "webrtc-chromium.png")

        await browser.evaluate("document.querySelector('[data-testid=hangup]').click()", gesture=True)
        await poll(browser, "document.querySelector('[data-testid=status]').innerText.startsWith('ended')", 10,
                   "the page shows the call ended")
        async with asyncio.timeout(10):  # the page's DELETE released the session
            while webrtc_active(rtc_server) != 0:
                await asyncio.sleep(0.2)
    finally:
        await browser.close()
