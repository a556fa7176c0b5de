"""POST /v1/audio/speech and GET /v1/audio/voices against a real server, real sockets, the bundled voice."""

from __future__ import annotations

import base64
import io
import json
import time

import av
import httpx
import openai
import pytest

from tests.conftest import LiveServer

LONG_TEXT = (
    "Good morning, and welcome to the weather report. Today will be sunny in the morning, with "
    "clouds arriving after lunch. Winds will be light, from the south west. Tonight, expect "
    "showers, some of them heavy, and temperatures falling to eight degrees. Tomorrow looks "
    "brighter: dry, mild and calm. That is all for now; have a pleasant day."
)
SHORT_TEXT = "The quick brown fox jumps over the lazy dog. It was a sunny day."


@pytest.fixture(scope="module")
def server(live_server: LiveServer) -> LiveServer:
    return live_server


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


def decode_seconds(data: bytes, fmt: str) -> float:
    """Duration of encoded speech, decoded with PyAV (raw pcm is 24 kHz 16-bit mono)."""
    if fmt == "pcm":
        return len(data) / 2 / 24000
    with av.open(io.BytesIO(data)) as container:
        samples, rate = 0, 0
        for frame in container.decode(audio=0):
            samples += frame.samples
            rate = frame.sample_rate
    return samples / rate


def test_openai_sdk_streams_speech_in_pieces(client: openai.OpenAI) -> None:
    arrivals: list[tuple[float, int]] = []
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=LONG_TEXT, response_format="pcm"
    ) as response:
        assert response.headers["content-type"].startswith("audio/pcm")
        for data in response.iter_bytes():
            arrivals.append((time.monotonic(), len(data)))
    done = time.monotonic()
    total = sum(n for _, n in arrivals)
    assert total % 2 == 0
    seconds = total / 2 / 24000
    assert 10 < seconds < 40, seconds  # ~60 words of speech
    # Streamed, not buffered: audio came in several pieces, the first a short clause, and the
    # first piece was in hand before the response ended.
    assert len(arrivals) >= 4, arrivals
    assert arrivals[0][1] < total / 4
    assert arrivals[0][0] < arrivals[-1][0] <= done


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_each_format_decodes_to_plausible_audio(client: openai.OpenAI, fmt: str) -> None:
    response = client.audio.speech.create(model="tts-1-hd", voice="nova", input=SHORT_TEXT, response_format=fmt)  # type: ignore[arg-type]
    seconds = decode_seconds(response.content, fmt)
    assert 2.0 < seconds < 8.0, (fmt, seconds)


def test_default_format_is_mp3_and_speed_shortens(server: LiveServer) -> None:
    body = {"model": "gpt-4o-mini-tts", "voice": "en_US-joe-medium", "input": SHORT_TEXT}
    normal = httpx.post(server.url + "/v1/audio/speech", json=body, timeout=30)
    fast = httpx.post(server.url + "/v1/audio/speech", json={**body, "speed": 2.0}, timeout=30)
    assert normal.status_code == fast.status_code == 200
    assert normal.headers["content-type"] == "audio/mpeg"
    assert decode_seconds(fast.content, "mp3") < 0.75 * decode_seconds(normal.content, "mp3")


def test_wav_has_a_streaming_header(server: LiveServer) -> None:
    body = {"model": "piper", "voice": "alloy", "input": "Hello there.", "response_format": "wav"}
    data = httpx.post(server.url + "/v1/audio/speech", json=body, timeout=30).content
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert int.from_bytes(data[24:28], "little") == 24000
    assert decode_seconds(data, "wav") > 0.3


def test_voices_are_listed(server: LiveServer) -> None:
    listing = httpx.get(server.url + "/v1/audio/voices").json()
    ids = [v["id"] for v in listing["data"]]
    assert "en_US-joe-medium" in ids
    assert [v["default"] for v in listing["data"]].count(True) == 1
    assert "alloy" in listing["aliases"]


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"model": "tts-1", "voice": "alloy", "input": ""}, 400, "string_too_short", "input"),
        ({"model": "tts-1", "voice": "alloy", "input": "   "}, 400, "string_too_short", "input"),
        ({"model": "tts-1", "voice": "alloy", "input": "word " * 1000}, 400, "string_above_max_length", "input"),
        ({"model": "tts-1", "voice": "alloy"}, 400, "invalid_value", "input"),
        ({"model": "tts-1", "voice": "nobody", "input": "hi"}, 400, "invalid_value", "voice"),
        ({"model": "tts-1", "voice": "alloy", "input": "hi", "response_format": "ogg"}, 400, "invalid_value", "response_format"),
        ({"model": "tts-1", "voice": "alloy", "input": "hi", "speed": 0.1}, 400, "invalid_value", "speed"),
        ({"model": "tts-1", "voice": "alloy", "input": "hi", "speed": 4.5}, 400, "invalid_value", "speed"),
        ({"model": "tts-1", "voice": "alloy", "input": "hi", "speed": "fast"}, 400, "invalid_value", "speed"),
        ({"model": "m" * 300, "voice": "alloy", "input": "hi"}, 400, "invalid_value", "model"),
        ({"model": "tts\n1", "voice": "alloy", "input": "hi"}, 400, "invalid_value", "model"),
        ({"model": 1, "voice": "alloy", "input": "hi"}, 400, "invalid_value", "model"),
        ({"model": "tts-1", "voice": "alloy", "input": "hi", "stream_format": "ws"}, 400, "invalid_value", "stream_format"),
    ],
)
def test_bad_requests_get_openai_style_errors(server: LiveServer, body: dict[str, object], status: int, code: str, param: str) -> None:
    r = httpx.post(server.url + "/v1/audio/speech", json=body, timeout=10)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["param"] == param
    assert error["type"] == "invalid_request_error" and error["message"]


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b'{"model": "tts-1", "voice": "alloy", "input": "caf\xe9"}', 400, "invalid_encoding"),
        (b'{"model": "tts-1", ', 400, "invalid_json"),
        (b'["tts-1"]', 400, "invalid_json"),
        (b'{"input": "' + b"a" * 200_000 + b'"}', 413, "request_too_large"),
    ],
)
def test_unparseable_bodies(server: LiveServer, content: bytes, status: int, code: str) -> None:
    r = httpx.post(server.url + "/v1/audio/speech", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_sdk_raises_on_bad_voice(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.speech.create(model="tts-1", voice="nobody", input="Hello.")  # type: ignore[arg-type]
    assert "unknown voice" in str(info.value)


def _metric(server: LiveServer, name: str) -> float:
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"metric {name} not found")


def test_client_disconnect_cancels_synthesis(server: LiveServer) -> None:
    body = {"model": "tts-1", "voice": "alloy", "input": LONG_TEXT * 10, "response_format": "mp3"}
    with httpx.stream("POST", server.url + "/v1/audio/speech", json=body, timeout=30) as r:
        assert r.status_code == 200
        next(r.iter_bytes())  # some audio, then hang up long before the end
    # The abandoned response stops: no stream stays active, no chunks stay queued.
    deadline = time.monotonic() + 20
    while _metric(server, "kombain_tts_streams_active") or _metric(server, "kombain_tts_queue_depth"):
        assert time.monotonic() < deadline, "synthesis kept running after the client left"
        time.sleep(0.1)
    assert _metric(server, "kombain_tts_first_audio_seconds_count") >= 1


def test_server_still_serves_after_errors(server: LiveServer, client: openai.OpenAI) -> None:
    assert httpx.get(server.url + "/healthz").status_code == 200
    response = client.audio.speech.create(model="tts-1", voice="echo", input="Still here.", response_format="wav")
    assert decode_seconds(response.content, "wav") > 0.3


@pytest.mark.parametrize("text", ["hello\u0000world", "hello\u001eworld\u0085"])
def test_control_characters_are_spoken_around_not_cut(server: LiveServer, text: str) -> None:
    """A NUL (or another control character) once cut the body after a 200 header."""
    ok = httpx.post(server.url + "/v1/audio/speech", timeout=30,
                    json={"model": "tts-1", "voice": "alloy", "input": "hello world", "response_format": "wav"})
    r = httpx.post(server.url + "/v1/audio/speech", timeout=30,
                   json={"model": "tts-1", "voice": "alloy", "input": text, "response_format": "wav"})
    assert r.status_code == 200, r.text
    assert decode_seconds(r.content, "wav") == pytest.approx(decode_seconds(ok.content, "wav"), rel=0.35)


def test_input_of_only_control_characters_is_refused(server: LiveServer) -> None:
    r = httpx.post(server.url + "/v1/audio/speech", timeout=10,
                   json={"model": "tts-1", "voice": "alloy", "input": "\u0000\u0001\u001e"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "input"


def _sse_events(r: httpx.Response) -> list[dict[str, object]]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].split(";")[0] == "text/event-stream"
    lines = [line for line in r.text.split("\n") if line]
    assert all(line.startswith("data: ") for line in lines), lines[:3]
    return [json.loads(line[6:]) for line in lines]


@pytest.mark.parametrize("fmt", ["pcm", "mp3"])
def test_sse_stream_format_sends_base64_deltas_then_done_with_usage(server: LiveServer, fmt: str) -> None:
    """stream_format "sse" as OpenAI documents it (livekit's default TTS model always asks for it)."""
    body = {"model": "gpt-4o-mini-tts", "voice": "ash", "input": SHORT_TEXT, "response_format": fmt,
            "stream_format": "sse"}
    events = _sse_events(httpx.post(server.url + "/v1/audio/speech", json=body, timeout=30))
    deltas, done = events[:-1], events[-1]
    assert len(deltas) >= 2 and all(e["type"] == "speech.audio.delta" and set(e) == {"type", "audio"} for e in deltas)
    assert done["type"] == "speech.audio.done"
    usage = done["usage"]
    assert isinstance(usage, dict) and set(usage) == {"input_tokens", "output_tokens", "total_tokens"}
    audio = b"".join(base64.b64decode(str(e["audio"])) for e in deltas)
    seconds = decode_seconds(audio, fmt)
    assert 2.0 < seconds < 8.0
    assert usage["input_tokens"] == -(-len(SHORT_TEXT) // 4)  # 4 characters a token, rounded up
    assert usage["output_tokens"] == pytest.approx(20 * seconds, abs=3)  # 20 tokens a second
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


@pytest.mark.parametrize("model", ["gpt-4o-mini-tts-2025-12-15", "kokoro", "piper/en_US-joe-medium", "whisper-1"])
def test_any_model_name_is_spoken_by_piper(client: openai.OpenAI, model: str) -> None:
    response = client.audio.speech.create(model=model, voice="coral", input="Any name will do.", response_format="wav")
    assert decode_seconds(response.content, "wav") > 0.5


def test_voice_as_an_object_with_an_id(server: LiveServer) -> None:
    """The SDK's custom-voice shape, {"id": ...}."""
    r = httpx.post(server.url + "/v1/audio/speech", timeout=30, json={
        "model": "gpt-4o-mini-tts", "voice": {"id": "en_US-joe-medium"}, "input": "An object voice.",
        "response_format": "wav"})
    assert r.status_code == 200, r.text
    assert decode_seconds(r.content, "wav") > 0.5


def test_a_repeated_prompt_is_served_from_the_cache(server: LiveServer) -> None:
    body = {"model": "tts-1", "voice": "alloy", "input": "Welcome to the cache test line. Please hold.",
            "response_format": "wav"}
    hits, misses = (_metric(server, 'kombain_tts_cache_hits_total{tier="memory"}'),
                    _metric(server, "kombain_tts_cache_misses_total"))
    first = httpx.post(server.url + "/v1/audio/speech", json=body, timeout=30)
    assert _metric(server, "kombain_tts_cache_misses_total") >= misses + 2  # two clauses rendered, then kept
    again = httpx.post(server.url + "/v1/audio/speech", json=body, timeout=30)
    assert first.status_code == again.status_code == 200 and again.content == first.content  # Piper's noise differs
    assert _metric(server, 'kombain_tts_cache_hits_total{tier="memory"}') >= hits + 2
    assert _metric(server, "kombain_tts_cache_bytes") > 0
