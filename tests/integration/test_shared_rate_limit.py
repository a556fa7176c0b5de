"""KOMBAIN_RATE_LIMIT_STORAGE: the request rate counted in a real Redis, one limit across nodes,
and requests let through (and counted) while that Redis is down."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from kombain.server.quotas import OverLimit, Quotas
from tests.lane.conftest import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


async def test_two_nodes_share_one_rate(redis_server: RedisServer) -> None:
    node_a = Quotas("3/minute", storage=redis_server.url)
    node_b = Quotas("3/minute", storage=redis_server.url)
    await node_a.hit("key:1")
    await node_b.hit("key:1")
    await node_a.hit("key:1")
    with pytest.raises(OverLimit) as err:
        await node_b.hit("key:1")  # the fourth request of the minute, on the other node
    assert err.value.code == "rate_limit_exceeded" and 1 <= err.value.retry_after_s <= 60
    await node_b.hit("key:2")  # another caller has its own rate
    alone = Quotas("3/minute")  # in memory: counts only its own
    for _ in range(3):
        await alone.hit("key:1")


async def test_an_unreachable_store_lets_requests_through(redis_server: RedisServer) -> None:
    errors: list[int] = []
    q = Quotas("1/minute", storage=redis_server.url, on_storage_error=lambda: errors.append(1))
    await q.hit("key:1")
    with pytest.raises(OverLimit):
        await q.hit("key:1")
    redis_server.stop()
    await q.hit("key:1")  # Redis gone: not refused
    await q.hit("key:1")
    assert len(errors) == 2


def test_a_storage_that_is_not_redis_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="rate_limit_storage"):
        Quotas("3/minute", storage="memcached://127.0.0.1:11211")
