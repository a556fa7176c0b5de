"""VoicePool and SpeechStream with the bundled voice: order, concurrency, cancel, validation."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from kombain.streaming.tts import SpeechChunk, UnknownVoice, VoicePool

TEXT = "Sure thing, I can help with that. The weather today is sunny, warm and dry. Bring water."


@pytest.fixture(scope="module")
def pool() -> Iterator[VoicePool]:
    latencies: list[float] = []
    p = VoicePool.load(workers=2, on_first_audio=latencies.append)
    p.latencies = latencies  # type: ignore[attr-defined]
    yield p
    p.close()


async def collect(pool: VoicePool, text: str, piece: int = 5, **kw: object) -> list[SpeechChunk]:
    stream = pool.stream(**kw)  # type: ignore[arg-type]
    for i in range(0, len(text), piece):
        stream.push_text(text[i : i + piece])
        await asyncio.sleep(0)
    stream.end_input()
    async with stream:
        return [chunk async for chunk in stream]


async def test_stream_yields_audio_per_chunk_in_order(pool: VoicePool) -> None:
    chunks = await collect(pool, TEXT, rate=16000)
    assert [c.text for c in chunks] == [
        "Sure thing,", "I can help with that.", "The weather today is sunny, warm and dry.", "Bring water.",
    ]
    assert all(c.rate == 16000 and len(c.pcm) % 2 == 0 for c in chunks)
    assert 3.0 < sum(c.duration for c in chunks) < 12.0
    assert pool.latencies  # type: ignore[attr-defined]


async def test_speed_and_rate(pool: VoicePool) -> None:
    slow = b"".join([c.pcm for c in await collect(pool, "Hello there, my friend.", speed=0.5, rate=8000)])
    fast = b"".join([c.pcm for c in await collect(pool, "Hello there, my friend.", speed=2.0, rate=8000)])
    assert len(fast) < len(slow) / 2


async def test_concurrent_streams_all_finish(pool: VoicePool) -> None:
    results = await asyncio.gather(*[collect(pool, TEXT) for _ in range(5)])
    assert all(len(r) == 4 for r in results)


async def test_aclose_stops_a_long_stream(pool: VoicePool) -> None:
    stream = pool.stream()
    stream.push_text(TEXT * 50)
    stream.end_input()
    got = []
    async for chunk in stream:
        got.append(chunk)
        await stream.aclose()
    assert len(got) == 1 and stream.closed
    assert [c async for c in stream] == []
    with pytest.raises(RuntimeError):
        stream.push_text("more")


async def test_stream_waits_for_text_until_end_input(pool: VoicePool) -> None:
    stream = pool.stream()
    it = stream.__aiter__()
    nxt = asyncio.ensure_future(it.__anext__())
    await asyncio.sleep(0.05)
    assert not nxt.done()  # nothing to say yet
    stream.push_text("Hello there, world")
    stream.end_input()
    first = await nxt
    assert first.text == "Hello there,"
    assert [c.text async for c in stream] == ["world"]


def test_validation(pool: VoicePool) -> None:
    with pytest.raises(UnknownVoice):
        pool.stream("nobody")
    with pytest.raises(ValueError):
        pool.stream(speed=5.0)
    with pytest.raises(ValueError):
        pool.stream(rate=1000)
    assert pool.resolve(None) == pool.default_voice == pool.voices()[0].id


async def test_short_clauses_are_rendered_once(pool: VoicePool) -> None:
    first = await collect(pool, "You said: the first thing.", rate=24000)
    again = await collect(pool, "You said: another thing.", rate=24000)
    assert first[0].text == again[0].text == "You said:"
    assert again[0].pcm == first[0].pcm  # the same audio, not a second render (Piper's noise differs)
    assert "You said:" in {k[1] for k in pool._clauses}
    assert not any(len(k[1]) > 24 for k in pool._clauses)
