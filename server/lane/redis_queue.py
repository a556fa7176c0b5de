"""Redis lane back end: one stream per priority with a consumer group, so workers on any host
share the work; a job silent past the idle time is reclaimed (XAUTOCLAIM) by another worker, and
one that keeps failing goes to a dead-letter stream.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import redis

from kombain.server.lane.jobs import Job, JobStatus, check_transition
from kombain.server.lane.queue import JobLost, JobQueue, QueueConfig, QueueFull, result_name

GROUP = "workers"
PRIORITY_LEVELS = (0, 1, 2)


class RedisQueue(JobQueue):
    """Jobs as hashes, work as stream messages `{"id": job_id}` under the `kombain:lane:` prefix."""

    transient_errors = (redis.ConnectionError, redis.TimeoutError)

    def __init__(self, url: str, config: QueueConfig, prefix: str = "kombain:lane:") -> None:
        self.config = config
        self.p = prefix
        # Any: redis-py's annotations cannot tell bytes replies (decode_responses=False) from str.
        self.r: Any = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        self._groups_ready = False

    # --- keys ---------------------------------------------------------------------------------
    def _job(self, job_id: str) -> str:
        return f"{self.p}job:{job_id}"

    def _stream(self, priority: int) -> str:
        return f"{self.p}stream:{priority}"

    def _ensure_groups(self) -> None:
        if self._groups_ready:
            return
        for pr in PRIORITY_LEVELS:
            try:
                self.r.xgroup_create(self._stream(pr), GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready = True

    def _read(self, job_id: str) -> Job | None:
        raw = self.r.hgetall(self._job(job_id))
        if not raw:
            return None
        row = {k.decode(): v for k, v in raw.items()}
        cancel = row.pop("cancel", b"0")
        for k in ("msg", "stream"):
            row.pop(k, None)
        job = Job.from_row(row)
        job.cancel_requested = cancel == b"1"
        return job

    def _write(self, pipe: Any, job: Job, **extra: Any) -> None:
        row = job.to_row()
        row.pop("cancel_requested")
        pipe.hset(self._job(job.id), mapping=row | extra)

    # --- API side -----------------------------------------------------------------------------
    def submit(self, job: Job, idempotency_key: str | None = None) -> Job:
        self._ensure_groups()
        idem = f"{self.p}idem:{idempotency_key}" if idempotency_key else None
        if idem and not self.r.set(idem, job.id, nx=True, ex=int(self.config.retention_s)):
            existing = self.r.get(idem)
            found = self._read(existing.decode()) if existing else None
            if found:
                return found
        queued = self.r.scard(f"{self.p}queued")
        if queued >= self.config.queue_limit:
            if idem:
                self.r.delete(idem)
            raise QueueFull(f"{queued} jobs queued, the limit is {self.config.queue_limit}")
        pipe = self.r.pipeline()
        self._write(pipe, job, cancel="0")
        pipe.sadd(f"{self.p}queued", job.id)
        pipe.xadd(self._stream(job.priority), {"id": job.id})
        pipe.execute()
        return job

    def get(self, job_id: str) -> Job | None:
        return self._read(job_id)

    def request_cancel(self, job_id: str) -> Job:
        job = self._read(job_id)
        if job is None:
            raise KeyError(job_id)
        check_transition(job.status, JobStatus.CANCELLED)
        pipe = self.r.pipeline()
        if job.status is JobStatus.QUEUED:
            # Its stream message stays; `claim` skips finished jobs and acknowledges them.
            job.status, job.finished_at = JobStatus.CANCELLED, time.time()
            self._write(pipe, job)
            pipe.srem(f"{self.p}queued", job.id)
            pipe.zadd(f"{self.p}finished", {job.id: job.finished_at})
        pipe.hset(self._job(job_id), "cancel", "1")
        pipe.execute()
        job.cancel_requested = True
        return job

    def counts(self) -> dict[str, int]:
        return {"queued": int(self.r.scard(f"{self.p}queued")),
                "running": int(self.r.scard(f"{self.p}running"))}

    def recover(self) -> int:
        # Nothing to do at server start: workers reclaim idle messages themselves.
        self._ensure_groups()
        return 0

    def release_worker(self, worker: str) -> int:
        n = 0
        for raw_id in self.r.smembers(f"{self.p}running"):
            job = self._read(raw_id.decode())
            if job and job.status is JobStatus.RUNNING and job.worker == worker:
                self.retry(job, "worker stopped while running the job")
                n += 1
        return n

    def purge(self, older_than: float) -> int:
        ids = [i.decode() for i in self.r.zrangebyscore(f"{self.p}finished", "-inf", older_than)]
        for job_id in ids:
            job = self._read(job_id)
            pipe = self.r.pipeline()
            for name in job.results if job else []:
                pipe.delete(f"{self.p}result:{job_id}:{name}")
            pipe.delete(self._job(job_id))
            pipe.zrem(f"{self.p}finished", job_id)
            pipe.execute()
        return len(ids)

    # --- worker side --------------------------------------------------------------------------
    def claim(self, worker: str) -> Job | None:
        self._ensure_groups()
        idle_ms = int(self.config.reclaim_idle_s * 1000)
        # Reclaim a dead worker's job before taking new work, highest priority first.
        for pr in PRIORITY_LEVELS:
            stream = self._stream(pr)
            _next, msgs, *_ = self.r.xautoclaim(stream, GROUP, worker, idle_ms, "0-0", count=1)
            for msg_id, fields in msgs:
                job = self._take(stream, msg_id, fields, worker, reclaimed=True)
                if job:
                    return job
        for pr in PRIORITY_LEVELS:
            stream = self._stream(pr)
            while True:
                got = self.r.xreadgroup(GROUP, worker, {stream: ">"}, count=1)
                if not got:
                    break
                msg_id, fields = got[0][1][0]
                job = self._take(stream, msg_id, fields, worker, reclaimed=False)
                if job:
                    return job
        return None

    def _take(self, stream: str, msg_id: bytes, fields: dict[bytes, bytes], worker: str,
              reclaimed: bool) -> Job | None:
        job_id = fields.get(b"id", b"").decode()
        job = self._read(job_id) if job_id else None
        if job is None or job.status.finished or (job.status is JobStatus.RUNNING and not reclaimed):
            self._ack(self.r, stream, msg_id)
            return None
        pipe = self.r.pipeline()
        if reclaimed and job.attempts >= self.config.max_attempts:
            self._dead_letter(pipe, job, f"worker {job.worker or '?'} stopped while running the job")
            self._ack(pipe, stream, msg_id)
            pipe.execute()
            return None
        job.status, job.worker, job.started_at, job.step = JobStatus.RUNNING, worker, time.time(), 0
        job.attempts += 1
        self._write(pipe, job, stream=stream, msg=msg_id)
        pipe.srem(f"{self.p}queued", job.id)
        pipe.sadd(f"{self.p}running", job.id)
        pipe.execute()
        return job

    def _ack(self, pipe: Any, stream: str, msg_id: bytes) -> None:
        pipe.xack(stream, GROUP, msg_id)
        pipe.xdel(stream, msg_id)

    def _dead_letter(self, pipe: Any, job: Job, error: str) -> None:
        job.status, job.finished_at = JobStatus.FAILED, time.time()
        job.error = f"gave up after {job.attempts} attempts: {error}"
        self._write(pipe, job)
        pipe.xadd(f"{self.p}dead", {"id": job.id, "error": job.error}, maxlen=10000, approximate=True)
        pipe.srem(f"{self.p}running", job.id)
        pipe.srem(f"{self.p}queued", job.id)
        pipe.zadd(f"{self.p}finished", {job.id: job.finished_at})

    def _msg(self, job: Job) -> tuple[str, bytes] | None:
        stream, msg = self.r.hmget(self._job(job.id), ["stream", "msg"])
        return (stream.decode(), msg) if stream and msg else None

    def progress(self, job: Job, step: int, steps: int) -> None:
        job.step, job.steps = step, steps
        self._keep(job, {"step": step, "steps": steps})

    def heartbeat(self, job: Job) -> None:
        self._keep(job, {})

    def _keep(self, job: Job, fields: dict[str, int]) -> None:
        owner = self.r.hget(self._job(job.id), "worker")
        if owner is None or json.loads(owner) != job.worker:
            raise JobLost(f"job {job.id} was reclaimed by another worker")
        ref = self._msg(job)
        pipe = self.r.pipeline()
        if fields:
            pipe.hset(self._job(job.id), mapping=fields)
        if ref:
            # Re-claiming our own message resets its idle time: the heartbeat that keeps
            # other workers' XAUTOCLAIM away while this one is alive.
            pipe.xclaim(ref[0], GROUP, job.worker, 0, [ref[1]], justid=True)
        pipe.execute()

    def cancel_requested(self, job_id: str) -> bool:
        return self.r.hget(self._job(job_id), "cancel") == b"1"

    def finish(self, job: Job, status: JobStatus, error: str | None = None) -> None:
        check_transition(job.status, status)
        ref = self._msg(job)
        # Change a copy, so a failed write can be retried with the job as it was.
        done = dataclasses.replace(job, status=status, error=error, finished_at=time.time())
        pipe = self.r.pipeline()
        self._write(pipe, done)
        pipe.srem(f"{self.p}running", job.id)
        pipe.zadd(f"{self.p}finished", {job.id: done.finished_at})
        if ref:
            self._ack(pipe, *ref)
        pipe.execute()
        job.status, job.error, job.finished_at = status, error, done.finished_at

    def retry(self, job: Job, error: str) -> bool:
        ref = self._msg(job)
        pipe = self.r.pipeline()
        if ref:
            self._ack(pipe, *ref)
        if job.attempts >= self.config.max_attempts:
            self._dead_letter(pipe, job, error)
            pipe.execute()
            return False
        job.status, job.worker, job.step, job.error = JobStatus.QUEUED, "", 0, error
        self._write(pipe, job)
        pipe.srem(f"{self.p}running", job.id)
        pipe.sadd(f"{self.p}queued", job.id)
        pipe.xadd(self._stream(job.priority), {"id": job.id})
        pipe.execute()
        return True

    def put_result(self, job: Job, index: int, data: bytes, ext: str) -> str:
        name = result_name(index, ext)
        self.r.set(f"{self.p}result:{job.id}:{name}", data, ex=int(self.config.retention_s) + 3600)
        return name

    def get_result(self, job_id: str, name: str) -> bytes | None:
        data = self.r.get(f"{self.p}result:{job_id}:{name}")
        return bytes(data) if data is not None else None

    # --- voice pressure and statistics ---------------------------------------------------------
    def publish_pressure(self, pressure: dict[str, Any]) -> None:
        self.r.set(f"{self.p}voice_pressure", json.dumps(pressure), px=3000)

    def read_pressure(self) -> dict[str, Any] | None:
        raw = self.r.get(f"{self.p}voice_pressure")
        return json.loads(raw) if raw else None

    def push_stats(self, stats: dict[str, Any]) -> None:
        pipe = self.r.pipeline()
        pipe.rpush(f"{self.p}stats", json.dumps(stats))
        pipe.ltrim(f"{self.p}stats", -10000, -1)
        pipe.execute()

    def drain_stats(self, limit: int = 1000) -> list[dict[str, Any]]:
        raw = self.r.lpop(f"{self.p}stats", limit) or []
        return [json.loads(x) for x in raw]

    def close(self) -> None:
        self.r.close()
