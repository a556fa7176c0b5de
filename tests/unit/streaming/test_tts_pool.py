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
    assert pool.cache.get(_key(pool, "You said:", 24000)) == first[0].pcm


def _key(pool: VoicePool, text: str, rate: int, speed: float = 1.0) -> str:
    from kombain.streaming.tts_cache import cache_key

    return cache_key(pool.fingerprint(pool.default_voice), text, length_scale=1.0 / speed, rate=rate)


async def test_a_repeated_prompt_is_served_from_memory(pool: VoicePool) -> None:
    outcomes: list[str] = []
    pool.cache._on_lookup = outcomes.append
    prompt = "Thank you for calling. One moment, please."
    first = await collect(pool, prompt, rate=8000)
    again = await collect(pool, "Thank you  for calling.   One moment, please. ", rate=8000)  # same after cleaning
    assert [c.pcm for c in again] == [c.pcm for c in first]
    assert outcomes == ["miss", "miss", "memory", "memory"]
    other_rate = await collect(pool, prompt, rate=16000)  # another format is another entry
    assert outcomes[4:] == ["miss", "miss"] and len(other_rate[0].pcm) > len(first[0].pcm)
    long = "word " * 60  # past max_chars: a document, not a prompt
    assert not pool.cache.wanted(long) and pool.cache.wanted(prompt)


async def test_a_render_cut_short_is_not_kept(pool: VoicePool) -> None:
    text = "This sentence is cancelled before a worker gets to finish it, so nothing is kept."
    stream = pool.stream(rate=22050)
    stream.push_text(text)
    stream.end_input()
    await stream.aclose()
    await asyncio.sleep(0.5)
    assert pool.cache.get(_key(pool, text, 22050)) is None
