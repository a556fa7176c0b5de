"""Model selection: the bundled multilingual base model, a model directory, and a bad name."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.conftest import SPEECH_DIR, start_server, stop_server
from tests.integration.helpers import clip_pcm16, open_session

pytestmark = pytest.mark.asyncio


async def test_bundled_base_model_is_assembled_and_serves(tmp_path):
    server = await asyncio.to_thread(start_server, tmp_path, {"KOMBAIN_STT_MODEL": "base"})
    try:
        assert "base" in httpx.get(server.url + "/readyz").json()["models"]
        assembled = tmp_path / "data" / "models" / "whisper-base" / "model.bin"
        assert assembled.is_file() and assembled.stat().st_size > 100_000_000
        s = await open_session(server.ws_url, type="transcription",
                               audio={"input": {"transcription": {"language": "en"}}})
        await s.append(clip_pcm16(SPEECH_DIR / "arctic_a0007.wav", 24000), 4800, speed=4.0, rate=24000)
        done = await s.wait_for("conversation.item.input_audio_transcription.completed", timeout=40)
        assert "always want to see it" in done[0]["transcript"].lower()
        await s.close()
    finally:
        await asyncio.to_thread(stop_server, server)


async def test_model_directory_path_and_unknown_model(tmp_path):
    from kombain.streaming.models import resolve_stt_model

    model_dir = resolve_stt_model("tiny.en", tmp_path)
    server = await asyncio.to_thread(start_server, tmp_path / "dir", {"KOMBAIN_STT_MODEL": str(model_dir)})
    try:
        with open(SPEECH_DIR / "goforward.wav", "rb") as f:
            r = httpx.post(server.url + "/v1/audio/transcriptions", files={"file": f}, timeout=60)
        assert "forward" in r.json()["text"].lower()
    finally:
        await asyncio.to_thread(stop_server, server)

    # A name that resolves to nothing: the process stays up, /readyz explains, /healthz is fine.
    bad = await asyncio.to_thread(_start_unready, tmp_path / "bad", {"KOMBAIN_STT_MODEL": "no-such-model"})
    try:
        r = httpx.get(bad.url + "/readyz")
        assert r.status_code == 503 and "unknown speech model" in r.json()["error"]
        assert httpx.get(bad.url + "/healthz").status_code == 200
    finally:
        await asyncio.to_thread(stop_server, bad)


def _start_unready(tmp, env):
    """Like start_server, but wait for /readyz to report an error instead of ready."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT, LiveServer, free_port

    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = tmp / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "kombain.server.cli", "serve", "--port", str(port)], cwd=ROOT,
                                env={**os.environ, "KOMBAIN_DATA_DIR": str(tmp / "data"), **env},
                                stdout=out, stderr=subprocess.STDOUT)
    server = LiveServer(f"http://127.0.0.1:{port}", port, proc, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            r = httpx.get(server.url + "/readyz", timeout=2)
            if r.status_code == 503 and r.json().get("status") == "error":
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(server.log())
