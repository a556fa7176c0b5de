"""Model names over REST: any name is served (server/model_aliases.py), /v1/models lists the
aliases with what serves them, /v1/models/{id} answers one or 404s as OpenAI does."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.conftest import SPEECH_DIR, LiveServer

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0)


async def test_models_list_names_every_alias_and_what_serves_it(live_server: LiveServer, client: openai.OpenAI) -> None:
    ids = [m.id for m in (await asyncio.to_thread(client.models.list)).data]
    for name in ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-transcribe",
                 "gpt-4o-transcribe-diarize", "tts-1", "tts-1-hd", "gpt-4o-mini-tts", "piper",
                 "piper/en_US-joe-medium"):
        assert name in ids
    assert len(ids) == len(set(ids))
    data = {m["id"]: m for m in httpx.get(live_server.url + "/v1/models", timeout=10).json()["data"]}
    served_stt = data["whisper-1"]["served_by"]  # tiny.en unless KOMBAIN_STT_MODEL says otherwise
    assert served_stt in httpx.get(live_server.url + "/readyz", timeout=10).json()["models"]
    assert data["gpt-transcribe"]["served_by"] == data[served_stt]["served_by"] == served_stt
    assert data["gpt-4o-mini-tts"]["served_by"] == "piper"
    assert {m["object"] for m in data.values()} == {"model"}


async def test_retrieve_a_model_and_an_unknown_one(client: openai.OpenAI) -> None:
    model = await asyncio.to_thread(client.models.retrieve, "gpt-transcribe")
    assert model.id == "gpt-transcribe" and model.object == "model" and model.created > 0
    voice = await asyncio.to_thread(client.models.retrieve, "piper/en_US-joe-medium")
    assert voice.id == "piper/en_US-joe-medium"
    with pytest.raises(openai.NotFoundError) as err:
        await asyncio.to_thread(client.models.retrieve, "no-such-model")
    assert err.value.body["code"] == "model_not_found"
    assert err.value.body["type"] == "invalid_request_error" and "no-such-model" in err.value.body["message"]


@pytest.mark.parametrize("model", ["gpt-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-transcribe",
                                   "my-own-whisper"])
async def test_any_transcription_model_name_is_served(client: openai.OpenAI, model: str) -> None:
    data = (SPEECH_DIR / "cards_001.wav").read_bytes()
    result = await asyncio.to_thread(client.audio.transcriptions.create, model=model, file=("a.wav", data))
    assert "of clubs" in result.text.lower()  # "10 of clubs."


async def test_a_model_name_that_is_no_name_is_refused(client: openai.OpenAI) -> None:
    data = (SPEECH_DIR / "cards_001.wav").read_bytes()
    for bad in ("m" * 300, "two\nlines"):
        with pytest.raises(openai.BadRequestError) as err:
            await asyncio.to_thread(client.audio.transcriptions.create, model=bad, file=("a.wav", data))
        assert err.value.body["param"] == "model" and err.value.body["code"] == "invalid_value"
