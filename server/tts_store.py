"""Synthesised speech shared by nodes in Redis (KOMBAIN_TTS_CACHE_REDIS=redis://host:port/db).

A `SharedStore` for `kombain.streaming.tts_cache`: entries expire after `ttl_s` (so a store that
nodes share stays bounded even without a maxmemory policy); a Redis that does not answer within
`timeout_s` counts an error and is left alone for `retry_s`, so a dead cache costs one timeout,
not one per clause.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

MAX_VALUE_BYTES = 4 * 1024 * 1024  # larger audio is not worth a round trip (the cache keeps clauses)


class RedisSpeechStore:
    def __init__(
        self,
        url: str,
        *,
        ttl_s: float = 86400.0,
        timeout_s: float = 0.2,
        retry_s: float = 5.0,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"tts_cache_redis: {url!r} is not a redis://, rediss:// or unix:// URL")
        self._redis = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.retry_s = retry_s
        self._on_error = on_error
        self._down_until = 0.0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        if self._resting():
            return None
        try:
            value = self._redis.get(key)
        except RedisError as exc:
            self._failed(exc)
            return None
        return value if isinstance(value, bytes) and value else None

    def set(self, key: str, pcm: bytes) -> None:
        if self._resting() or not pcm or len(pcm) > MAX_VALUE_BYTES:
            return
        try:
            self._redis.set(key, pcm, px=self.ttl_ms)
        except RedisError as exc:
            self._failed(exc)

    def close(self) -> None:
        self._redis.close()

    def _resting(self) -> bool:
        return time.monotonic() < self._down_until

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            first = not self._resting()
            self._down_until = time.monotonic() + self.retry_s
        if first:
            log.warning("speech cache store unreachable (%s); rendering without it for %.0f s", exc, self.retry_s)
        if self._on_error is not None:
            self._on_error()
