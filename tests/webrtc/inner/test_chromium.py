"""End to end in headless Chromium: the page at / calls the server with a fake microphone.

The page is driven as a person would use it: settings chosen (voice, a 300 ms silence, the echo
responder), a call made with recorded speech, the partial and final transcript and the reply
shown with its timings, a typed message, the turn detection changed mid-call, a hang-up; then the
errors a person meets: the server unreachable, the microphone refused. Screenshots of the call
land in artifacts/ (docs/img/call-page.png is one of them, checked in by hand).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import wave

import numpy as np
import pytest
import soxr

from kombain.clients.realtime_client import read_wav
from tests.conftest import ROOT, SPEECH_DIR
from tests.webrtc.browser import CHROMIUM_FLAGS, Browser, find_chromium
from tests.webrtc.inner.conftest import webrtc_active

pytestmark = pytest.mark.asyncio

ARTIFACTS = ROOT / "artifacts"
TRANSCRIPT = "document.querySelector('[data-testid=transcript]').innerText"


def fake_microphone(path, clip, lead_s: float = 2.0, trail_s: float = 5.0) -> None:
    """Speech with silence around it at 48 kHz, for Chromium's fake microphone."""
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
    try:
        async with asyncio.timeout(timeout):
            while not (value := await browser.evaluate(expression)):
                await asyncio.sleep(0.1)
    except TimeoutError:
        page = await browser.evaluate("document.querySelector('main').innerText")
        raise AssertionError(f"{what}: not within {timeout} s; the page shows:\n{page}") from None
    return value


def el(name: str) -> str:
    return f"document.querySelector('[data-testid={name}]')"


async def test_call_page(rtc_server, tmp_path):
    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    mic = tmp_path / "mic.wav"
    fake_microphone(mic, SPEECH_DIR / "arctic_a0009.wav", lead_s=1.5, trail_s=8.0)
    browser = await Browser.launch(binary, tmp_path / "profile", f"{mic}%noloop", tmp_path / "chromium.log")
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        await browser.send("Page.enable")
        await browser.send("Emulation.setDeviceMetricsOverride", width=1100, height=980, deviceScaleFactor=1,
                           mobile=False)
        await browser.send("Page.navigate", url=rtc_server.url + "/")
        await poll(browser, "document.readyState === 'complete' && !!window.kombainStats", 20, "page loaded")
        assert await browser.evaluate(f"{el('hangup')}.disabled")
        assert await browser.evaluate(f"{el('text')}.disabled"), "no typing before a call"
        # The server's offer fills the lists: its voice, the responders it can run.
        await poll(browser, f"{el('voice')}.value === 'en_US-joe-medium'", 10, "voices listed")
        responders = await browser.evaluate(f"[...{el('responder')}.options].map(o => o.value)")
        assert "echo" in responders and "script" in responders, responders
        assert "Nothing yet" in await browser.evaluate("document.getElementById('hint').innerText")
        await browser.screenshot(ARTIFACTS / "call-page-idle.png")

        # Settings first: 300 ms of silence ends a turn, the echo responder.
        await browser.evaluate(f"{el('silence')}.value = '300'; {el('responder')}.value = 'echo'")
        await browser.evaluate(f"{el('call')}.click()", gesture=True)
        await poll(browser, f"{el('applied')}.innerText.includes('server_vad, 300 ms silence')", 20,
                   "session.update applied on the data channel (session.updated shown)")
        await browser.evaluate("""window.partialsSeen = [];
            new MutationObserver(() => document.querySelectorAll('#transcript li.user.partial .text')
                .forEach(e => e.textContent && window.partialsSeen.push(e.textContent)))
              .observe(document.getElementById('transcript'), {subtree: true, childList: true, characterData: true});
        """)
        await poll(browser, "window.partialsSeen.length > 0", 30, "partial words shown while speaking")
        with contextlib.suppress(AssertionError):  # for the picture only: a few words in
            await poll(browser, "window.partialsSeen.some(t => t.trim().split(' ').length >= 3)", 3, "")
        await browser.screenshot(ARTIFACTS / "call-page-speaking.png")
        await poll(browser, f"{TRANSCRIPT}.toLowerCase().includes('across the table')", 60, "caller's words shown")
        await poll(browser, f"{TRANSCRIPT}.toLowerCase().includes('you said')", 30, "the reply shown as text")
        # Per turn: heard after, transcript and synthesis times, all numbers.
        timing = await poll(browser, f"(t => t && /synthesis \\d+ ms/.test(t.innerText) && t.innerText)({el('timing')})",
                            30, "the reply's timings shown")
        m = re.fullmatch(r"heard after (\d+) ms · transcript (\d+) ms · synthesis (\d+) ms", timing.strip())
        assert m, timing
        heard, stt, tts = map(int, m.groups())
        # Synthesis can be 0 ms: a reply prepared at the pause is synthesised before the turn ends.
        assert 0 < heard < 10000 and stt < 5000 and 0 <= tts < 5000, timing
        turns = await browser.evaluate("window.kombainTurns()")
        assert turns[0]["heardMs"] == pytest.approx(heard, abs=1) and turns[0]["endOfSpeech"] <= turns[0]["stoppedAt"]
        assert await browser.evaluate(f"{el('last-heard')}.innerText") == f"{heard} ms"
        stats = await poll(browser, "window.kombainStats().then(s => s.inbound && s.inbound.totalAudioEnergy > 0.01"
                                    " && s.inbound.bytesReceived > 10000 ? s : null)", 30, "reply audio received")
        assert stats["state"] == "connected" and stats["outbound"]["bytesSent"] > 10000, stats

        # A typed turn: conversation.item.create (GA shape, input_text) and response.create.
        bots = await browser.evaluate("document.querySelectorAll('#transcript li.bot').length")
        await browser.evaluate(f"{el('text')}.value = 'Hello there'; {el('send')}.click()", gesture=True)
        await poll(browser, f"{TRANSCRIPT}.includes('You (typed)')", 5, "the typed message shown")
        reply = await poll(browser, f"""(() => {{
            const bots = document.querySelectorAll('#transcript li.bot');
            const last = bots[bots.length - 1];
            return bots.length > {bots} && /heard after \\d+ ms/.test(last.innerText) ? last.innerText : null;
        }})()""", 20, "the typed turn answered, with the time it took")
        assert "hello there" in reply.lower(), reply
        assert await browser.evaluate(f"{el('error')}.hidden"), await browser.evaluate(f"{el('error')}.innerText")
        with contextlib.suppress(AssertionError):  # for the picture only: the reply finished
            await poll(browser, "![...document.querySelectorAll('.timing')].some(t => t.innerText.includes('…'))", 10, "")
        await browser.evaluate("window.scrollTo(0, 0)")
        await browser.screenshot(ARTIFACTS / "call-page.png")

        # Turn detection changed mid-call: semantic_vad, eager.
        await browser.evaluate(f"{el('turn-semantic')}.click(); {el('eagerness')}.value = 'high';"
                               f"{el('apply')}.click()", gesture=True)
        await poll(browser, f"{el('applied')}.innerText.includes('semantic_vad, eagerness high')", 10,
                   "the new turn detection applied")

        await browser.evaluate(f"{el('hangup')}.click()", gesture=True)
        await poll(browser, f"{el('status')}.innerText.startsWith('ended')", 10, "the page shows the call ended")
        async with asyncio.timeout(10):  # the page's DELETE released the session
            while webrtc_active(rtc_server) != 0:
                await asyncio.sleep(0.2)

        # The server unreachable: a plain message, not "Failed to fetch".
        await browser.send("Network.enable")
        await browser.send("Network.emulateNetworkConditions", offline=True, latency=0, downloadThroughput=-1,
                           uploadThroughput=-1)
        await browser.evaluate(f"{el('call')}.click()", gesture=True)
        error = await poll(browser, f"!{el('error')}.hidden && {el('error')}.innerText", 10, "error shown")
        assert "cannot reach the server" in error and "is kombain running" in error, error
        await browser.send("Network.emulateNetworkConditions", offline=False, latency=0, downloadThroughput=-1,
                           uploadThroughput=-1)
        print(json.dumps({"heard_ms": heard, "transcript_ms": stt, "synthesis_ms": tts,
                          "server": turns[0].get("serverTimings")}))
    finally:
        await browser.close()

    # The microphone refused: a browser that denies permission prompts (no fake accepting UI).
    flags = [f for f in CHROMIUM_FLAGS if f != "--use-fake-ui-for-media-stream"] + ["--deny-permission-prompts"]
    browser = await Browser.launch(binary, tmp_path / "profile2", mic, tmp_path / "chromium2.log", flags=flags)
    try:
        await browser.send("Page.enable")
        await browser.send("Page.navigate", url=rtc_server.url + "/")
        await poll(browser, "document.readyState === 'complete' && !!window.kombainStats", 20, "page loaded")
        await browser.evaluate(f"{el('call')}.click()", gesture=True)
        error = await poll(browser, f"!{el('error')}.hidden && {el('error')}.innerText", 10, "the refusal explained")
        assert "microphone was refused" in error and "press Call again" in error, error
        assert await browser.evaluate(f"!{el('call')}.disabled"), "Call can be pressed again"
    finally:
        await browser.close()
