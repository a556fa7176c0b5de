"""KOMBAIN_RATE_LIMIT_STORAGE: the request rate and concurrent calls counted in a real Redis, one
limit across nodes; a dead node's calls lapse; while that Redis is down requests are let through
(and counted) and calls are capped per node."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import websockets

from kombain.server.quotas import OverLimit, Quotas
from tests.conftest import start_server, stop_server
from tests.integration.helpers import RawSession
from tests.lane.conftest import RedisServer

KEY = "sk-shared-limits-test"


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


# --- concurrent calls across nodes ---------------------------------------------------------------


async def test_two_nodes_share_one_call_cap(redis_server: RedisServer) -> None:
    node_a = Quotas(max_calls=2, storage=redis_server.url)
    node_b = Quotas(max_calls=2, storage=redis_server.url)
    try:
        first = await node_a.open_call("key:1")
        await node_b.open_call("key:1")
        with pytest.raises(OverLimit) as err:
            await node_a.open_call("key:1")  # a third call, though node A holds only one
        assert err.value.code == "too_many_calls"
        await node_b.open_call("key:2")  # another caller has its own cap
        first()
        first()  # idempotent
        for _ in range(50):  # the release reaches Redis in the background
            try:
                await node_b.open_call("key:1")
                break
            except OverLimit:
                await asyncio.sleep(0.02)
        else:
            raise AssertionError("the released call's slot never came back")
        with pytest.raises(OverLimit):
            await node_a.open_call("key:1")
    finally:
        await node_a.aclose()
        await node_b.aclose()


async def test_a_dead_nodes_calls_lapse_and_live_ones_are_renewed(redis_server: RedisServer) -> None:
    dead = Quotas(max_calls=1, storage=redis_server.url, lease_ttl_s=1.0)
    live = Quotas(max_calls=1, storage=redis_server.url, lease_ttl_s=1.0)
    try:
        await dead.open_call("key:1")
        await live.open_call("key:2")
        dead.forget_calls()  # the node dies: no release, no renewal
        with pytest.raises(OverLimit):
            await live.open_call("key:1")
        await asyncio.sleep(1.6)  # past the lease; key:2's lease was renewed meanwhile
        await live.open_call("key:1")
        with pytest.raises(OverLimit):
            await dead.open_call("key:2")  # still held by the live node
    finally:
        await dead.aclose()
        await live.aclose()


async def test_calls_are_counted_per_node_while_the_store_is_down(redis_server: RedisServer) -> None:
    errors: list[int] = []
    q = Quotas(max_calls=1, storage=redis_server.url, on_storage_error=lambda: errors.append(1))
    try:
        release = await q.open_call("key:1")
        redis_server.stop()
        with pytest.raises(OverLimit):
            await q.open_call("key:1")  # this node's own count still holds the cap
        release()
        await q.open_call("key:1")  # and its slot comes back without Redis
        assert errors
    finally:
        await q.aclose()


async def test_two_nodes_share_one_job_cap(redis_server: RedisServer) -> None:
    node_a = Quotas(max_queued_jobs=2, storage=redis_server.url)
    node_b = Quotas(max_queued_jobs=2, storage=redis_server.url)
    try:
        await node_a.record_job("key:1", "job-1")
        await node_b.record_job("key:1", "job-2")
        recorded = await node_a.jobs_of("key:1")
        assert recorded == ["job-1", "job-2"]  # node B's job is seen on node A
        with pytest.raises(OverLimit) as err:
            await node_a.check_jobs("key:1", recorded, recorded)
        assert err.value.code == "too_many_queued_jobs"
        await node_a.check_jobs("key:1", recorded, ["job-1"])  # job-2 finished: pruned for every node
        assert await node_b.jobs_of("key:1") == ["job-1"]
        assert await node_b.jobs_of("key:2") == []
        redis_server.stop()
        assert await node_b.jobs_of("key:1") == ["job-2"]  # store down: what node B recorded itself
    finally:
        await node_a.aclose()
        await node_b.aclose()


async def test_one_call_cap_across_two_servers(redis_server: RedisServer, tmp_path: Path) -> None:
    """Two real servers on one Redis, one call per key: a key's second call is refused on the
    other node, and gets through there once the first call has ended."""
    env = {"KOMBAIN_API_KEYS": KEY, "KOMBAIN_KEY_MAX_CALLS": "1", "KOMBAIN_RATE_LIMIT_STORAGE": redis_server.url,
           "KOMBAIN_COMPONENTS_DISABLED": "text-to-speech,webrtc,audiosocket,sip,lane", "KOMBAIN_LANE_WORKERS": "0"}
    servers = await asyncio.gather(asyncio.to_thread(start_server, tmp_path / "a", env),
                                   asyncio.to_thread(start_server, tmp_path / "b", env))
    auth = {"Authorization": f"Bearer {KEY}"}
    try:
        a, b = (s.ws_url + "/v1/realtime?intent=transcription" for s in servers)
        first = RawSession(await websockets.connect(a, additional_headers=auth))
        await first.wait_for("session.created")
        with pytest.raises(websockets.InvalidStatus) as err:
            async with websockets.connect(b, additional_headers=auth):
                pass
        assert err.value.response.status_code == 429
        assert json.loads(err.value.response.body)["error"]["code"] == "too_many_calls"
        await first.close()
        for _ in range(50):  # node A notices the close and releases the lease in Redis
            try:
                second = RawSession(await websockets.connect(b, additional_headers=auth))
                break
            except websockets.InvalidStatus:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("the call's slot never came back across nodes")
        await second.wait_for("session.created")
        await second.close()
    finally:
        for s in servers:
            stop_server(s)
    for s in servers:
        assert "Traceback" not in s.log(), s.log()[-3000:]
