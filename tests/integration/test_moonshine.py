"""KOMBAIN_STT_MODEL=moonshine-base: the Moonshine engine serves the live path over /v1/realtime
(partials and a final) and REST transcriptions, on one server of its own (its model converted
into the data directory on the first start)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import SPEECH_DIR, start_server, stop_server
from tests.integration.helpers import clip_pcm16, open_session

pytestmark = pytest.mark.asyncio


async def test_moonshine_serves_realtime_and_rest(tmp_path):
    server = await asyncio.to_thread(start_server, tmp_path, {
        "KOMBAIN_STT_MODEL": "moonshine-base",
        "KOMBAIN_COMPONENTS_DISABLED": "text-to-speech,webrtc,audiosocket,sip,wyoming,lane",
        "KOMBAIN_LANE_WORKERS": "0",
    }, 240)
    try:
        assert "moonshine-base" in httpx.get(server.url + "/readyz").json()["models"]
        assert list((tmp_path / "data" / "models").glob("moonshine-*/decoder_step.onnx"))

        s = await open_session(server.ws_url, type="transcription")
        await s.append(clip_pcm16(SPEECH_DIR / "arctic_a0007.wav", 24000), 4800, speed=2.0, rate=24000)
        done = await s.wait_for("conversation.item.input_audio_transcription.completed", timeout=60)
        assert "superlative degree" in done[0]["transcript"].lower()
        assert [e for e in s.events if e["type"] == "conversation.item.input_audio_transcription.delta"]

        # Another engine's model is not loaded here: an error naming the field, the session goes on.
        await s.send({"type": "session.update", "session": {
            "type": "transcription", "audio": {"input": {"transcription": {"model": "tiny.en"}}}}})
        err = await s.wait_for("error", timeout=10)
        assert err[0]["error"]["param"] == "session.audio.input.transcription.model"
        assert "moonshine-base" in err[0]["error"]["message"]
        await s.close()

        with open(SPEECH_DIR / "goforward.wav", "rb") as f:
            r = await asyncio.to_thread(httpx.post, server.url + "/v1/audio/transcriptions",
                                        files={"file": f}, data={"response_format": "verbose_json"}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert "go forward ten" in body["text"].lower()
        assert body["segments"] and body["segments"][-1]["end"] == pytest.approx(body["duration"], abs=0.2)

        # Who spoke when is given per word, and Moonshine gives no word times: a 400 naming the model.
        with open(SPEECH_DIR / "goforward.wav", "rb") as f:
            r = await asyncio.to_thread(httpx.post, server.url + "/v1/audio/transcriptions", files={"file": f},
                                        data={"model": "gpt-4o-transcribe-diarize", "response_format": "diarized_json"},
                                        timeout=60)
        assert r.status_code == 400 and r.json()["error"]["param"] == "model", r.text
    finally:
        await asyncio.to_thread(stop_server, server)
