"""Both queue back ends against one contract: priority order, cancel, retry and dead letters,
idempotency, the queue limit, results. SQLite in a tmp dir; Redis a real redis-server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kombain.server.lane.backends import open_queue
from kombain.server.lane.jobs import InvalidTransition, Job, JobKind, JobStatus
from kombain.server.lane.queue import JobLost, JobQueue, QueueConfig, QueueFull


def _job(i: int, priority: int = 1) -> Job:
    return Job(id=f"img_{i}", kind=JobKind.IMAGE, model="m", prompt=f"p{i}",
               params={"width": 8, "height": 8}, priority=priority, created_at=1000.0 + i)


@pytest.fixture(params=["embedded", "redis"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobQueue]:
    config = QueueConfig(data_dir=tmp_path, queue_limit=5, max_attempts=2, reclaim_idle_s=0.2)
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url
    else:
        url = "embedded"
    q = open_queue(url, config)
    yield q
    q.close()


def test_priority_then_age(queue: JobQueue) -> None:
    for i, pr in enumerate([2, 1, 0, 1, 2]):
        queue.submit(_job(i, pr))
    order = [queue.claim("w").id for _ in range(5)]  # type: ignore[union-attr]
    assert order == ["img_2", "img_1", "img_3", "img_0", "img_4"]
    assert queue.claim("w") is None
    assert queue.counts() == {"queued": 0, "running": 5}


def test_limit_and_idempotency(queue: JobQueue) -> None:
    first = queue.submit(_job(0), idempotency_key="k1")
    assert queue.submit(_job(99), idempotency_key="k1").id == first.id
    for i in range(1, 5):
        queue.submit(_job(i))
    with pytest.raises(QueueFull):
        queue.submit(_job(5))
    assert queue.counts()["queued"] == 5


def test_cancel(queue: JobQueue) -> None:
    queue.submit(_job(0))
    queue.submit(_job(1))
    assert queue.request_cancel("img_0").status is JobStatus.CANCELLED
    running = queue.claim("w")
    assert running is not None and running.id == "img_1"  # the cancelled one is skipped
    assert queue.request_cancel("img_1").status is JobStatus.RUNNING
    assert queue.cancel_requested("img_1")
    queue.finish(running, JobStatus.CANCELLED)
    with pytest.raises(InvalidTransition):
        queue.request_cancel("img_1")
    with pytest.raises(KeyError):
        queue.request_cancel("img_nope")


def test_progress_result_and_finish(queue: JobQueue) -> None:
    queue.submit(_job(0))
    job = queue.claim("w")
    assert job is not None and job.attempts == 1 and job.worker == "w"
    queue.progress(job, 3, 4)
    stored = queue.get("img_0")
    assert stored is not None and (stored.step, stored.steps, stored.progress) == (3, 4, 75)
    job.results = [queue.put_result(job, 0, b"\x89PNG", "png")]
    queue.finish(job, JobStatus.SUCCEEDED)
    done = queue.get("img_0")
    assert done is not None and done.status is JobStatus.SUCCEEDED and done.results == ["0.png"]
    assert queue.get_result("img_0", "0.png") == b"\x89PNG"
    assert queue.counts() == {"queued": 0, "running": 0}
    assert queue.purge(time.time() + 1) == 1
    assert queue.get("img_0") is None


def test_retry_then_dead_letter(queue: JobQueue) -> None:
    queue.submit(_job(0))
    job = queue.claim("w")
    assert job is not None
    assert queue.retry(job, "boom") is True
    job = queue.claim("w")
    assert job is not None and job.attempts == 2
    assert queue.retry(job, "boom again") is False
    failed = queue.get("img_0")
    assert failed is not None and failed.status is JobStatus.FAILED
    assert "gave up after 2 attempts" in (failed.error or "")
    assert queue.claim("w") is None


def test_release_worker_requeues(queue: JobQueue) -> None:
    queue.submit(_job(0))
    assert queue.claim("dead-worker") is not None
    assert queue.release_worker("dead-worker") == 1
    again = queue.claim("w2")
    assert again is not None and again.id == "img_0" and again.attempts == 2


def test_pressure_and_stats(queue: JobQueue) -> None:
    assert queue.read_pressure() is None
    queue.publish_pressure({"pending": 2, "sessions": 1, "ts": 5.0})
    assert queue.read_pressure() == {"pending": 2, "sessions": 1, "ts": 5.0}
    queue.push_stats({"kind": "image", "steps": [0.1], "paused": 0.0, "status": "succeeded"})
    assert queue.drain_stats() == [{"kind": "image", "steps": [0.1], "paused": 0.0, "status": "succeeded"}]
    assert queue.drain_stats() == []


def test_embedded_recover_after_crash(tmp_path: Path) -> None:
    config = QueueConfig(data_dir=tmp_path)
    q = open_queue("embedded", config)
    q.submit(_job(0))
    q.submit(_job(1))
    assert q.claim("w") is not None
    q.close()
    q = open_queue("embedded", config)  # a new server process
    assert q.recover() == 1
    assert q.counts() == {"queued": 2, "running": 0}
    q.close()


def test_redis_reclaims_idle_job(redis_server: object) -> None:
    config = QueueConfig(data_dir=Path("/nonexistent"), max_attempts=3, reclaim_idle_s=0.2)
    q = open_queue(redis_server.url, config)  # type: ignore[attr-defined]
    q.submit(_job(0))
    assert q.claim("w1") is not None
    assert q.claim("w2") is None  # not idle long enough yet
    time.sleep(0.3)
    job = q.claim("w2")
    assert job is not None and job.id == "img_0" and job.worker == "w2" and job.attempts == 2
    stale = _job(0)
    stale.worker = "w1"
    with pytest.raises(JobLost):  # w1 comes back: it must stop, w2 owns the job now
        q.progress(stale, 1, 4)
    q.progress(job, 1, 4)
    q.close()


def test_redis_heartbeat_keeps_a_silent_job_and_notices_a_takeover(redis_server: object) -> None:
    from kombain.server.lane.worker import _Heartbeat

    config = QueueConfig(data_dir=Path("/nonexistent"), max_attempts=3, reclaim_idle_s=0.4)
    q = open_queue(redis_server.url, config)  # type: ignore[attr-defined]
    q.submit(_job(0))
    job = q.claim("w1")
    assert job is not None
    beat = _Heartbeat(q, job, lambda fn, default: fn())
    beat.start()
    try:
        time.sleep(1.2)  # three idle periods without a progress report: a model load, say
        assert q.claim("w2") is None and beat.lost is None
    finally:
        beat.stop()
    time.sleep(0.6)  # now silent for real: another worker takes it over
    taken = q.claim("w2")
    assert taken is not None and taken.worker == "w2" and taken.attempts == 2
    late = _Heartbeat(q, job, lambda fn, default: fn())
    late.interval = 0.05
    late.start()
    time.sleep(0.3)
    late.stop()
    with pytest.raises(JobLost):
        late.checked(lambda i, n: None)(1, 4)
    q.close()
