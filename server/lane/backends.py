"""Opens the lane's queue back end named by KOMBAIN_QUEUE (kept apart from `queue.py`, which the
back ends import for the interface)."""

from __future__ import annotations

from kombain.server.lane.queue import JobQueue, QueueConfig


def open_queue(url: str, config: QueueConfig) -> JobQueue:
    """'embedded' (or '') -> SQLite in the data dir; 'redis://...' -> Redis Streams."""
    if url in ("", "embedded"):
        from kombain.server.lane.sqlite_queue import SqliteQueue

        return SqliteQueue(config)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from kombain.server.lane.redis_queue import RedisQueue

        return RedisQueue(url, config)
    raise ValueError(f"queue must be 'embedded' or a redis:// URL, got {url!r}")
