"""KOMBAIN_TTS_CACHE_REDIS: synthesised prompts shared by nodes through a real redis-server; a
Redis that goes away is counted and the node renders on its own."""

from __future__ import annotations

import asyncio

import pytest
import redis

from kombain.server.tts_store import RedisSpeechStore
from kombain.streaming.tts import VoicePool
from kombain.streaming.tts_cache import SpeechCache
from tests.lane.conftest import RedisServer

PROMPT = "Thank you for calling. Press one for sales."


def _node(url: str, outcomes: list[str], errors: list[int]) -> VoicePool:
    store = RedisSpeechStore(url, ttl_s=60, timeout_s=0.5, retry_s=30, on_error=lambda: errors.append(1))
    return VoicePool.load(workers=1, cache=SpeechCache(store=store, on_lookup=outcomes.append))


async def test_two_nodes_share_rendered_prompts(redis_server: RedisServer) -> None:
    seen_a: list[str] = []
    seen_b: list[str] = []
    errors: list[int] = []
    node_a = _node(redis_server.url, seen_a, errors)
    node_b = _node(redis_server.url, seen_b, errors)
    try:
        first = await node_a.synthesize(PROMPT, rate=8000)
        assert seen_a == ["miss", "miss"]
        keys = redis.Redis.from_url(redis_server.url).keys("kombain:tts:v1:*")
        for _ in range(50):  # the write-back runs on the cache's thread, after the audio is handed over
            if len(keys) == 2:
                break
            await asyncio.sleep(0.02)
            keys = redis.Redis.from_url(redis_server.url).keys("kombain:tts:v1:*")
        assert len(keys) == 2 and redis.Redis.from_url(redis_server.url).pttl(keys[0]) > 50_000
        assert await node_b.synthesize(PROMPT, rate=8000) == first  # not rendered again: the same audio
        assert seen_b == ["shared", "shared"]
        await node_b.synthesize(PROMPT, rate=8000)
        assert seen_b[2:] == ["memory", "memory"]  # and now kept in node b's memory too
        assert await node_b.synthesize(PROMPT, rate=16000) != first and seen_b[4:] == ["miss", "miss"]

        redis_server.stop()  # the shared cache goes away: node a still speaks, from memory or by rendering
        node_a.cache.clear()
        audio = await node_a.synthesize("Please hold.", rate=8000)
        assert audio and seen_a[2:] == ["miss"] and errors == [1]
        await node_a.synthesize("Goodbye.", rate=8000)  # resting: no second timeout, no second error
        assert errors == [1]
    finally:
        node_a.close()
        node_b.close()


def test_a_bad_url_is_refused() -> None:
    with pytest.raises(ValueError, match="tts_cache_redis"):
        RedisSpeechStore("http://127.0.0.1:1")
