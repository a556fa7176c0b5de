"""`JobQueue`: the one interface both lane back ends (embedded SQLite, Redis Streams) implement.

The interface is synchronous: workers call it directly, the server through `asyncio.to_thread`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kombain.server.lane.jobs import Job, JobStatus


class QueueFull(Exception):
    """More jobs are queued than the configured limit."""


class JobLost(Exception):
    """Another worker reclaimed this job (this one looked dead to the group); stop working on it."""


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """What a back end needs from Settings."""

    data_dir: Path
    queue_limit: int = 64
    max_attempts: int = 3
    reclaim_idle_s: float = 60.0
    retention_s: float = 86400.0


class JobQueue(abc.ABC):
    """Durable priority queue of lane jobs, with progress, cancel and result storage."""

    # Errors that mean "the back end is unreachable for now": callers retry or answer 503.
    transient_errors: tuple[type[Exception], ...] = ()
    config: QueueConfig

    # --- API side -----------------------------------------------------------------------------
    @abc.abstractmethod
    def submit(self, job: Job, idempotency_key: str | None = None) -> Job:
        """Store and enqueue `job`; with a key seen before, return that job instead.

        Raises QueueFull past the limit."""

    @abc.abstractmethod
    def get(self, job_id: str) -> Job | None: ...

    @abc.abstractmethod
    def request_cancel(self, job_id: str) -> Job:
        """Cancel a queued job now, or flag a running one for its worker.

        Raises KeyError if unknown and InvalidTransition if finished."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """{"queued": n, "running": m}."""

    @abc.abstractmethod
    def recover(self) -> int:
        """At server start: re-queue jobs left running by a previous process. Returns how many."""

    @abc.abstractmethod
    def release_worker(self, worker: str) -> int:
        """A local worker died: re-queue (or fail, past max attempts) the jobs it held."""

    @abc.abstractmethod
    def purge(self, older_than: float) -> int:
        """Delete finished jobs (and their files) finished before `older_than` (epoch seconds)."""

    # --- worker side --------------------------------------------------------------------------
    @abc.abstractmethod
    def claim(self, worker: str) -> Job | None:
        """Take the next job, highest priority first, oldest first; it becomes RUNNING."""

    @abc.abstractmethod
    def progress(self, job: Job, step: int, steps: int) -> None:
        """Record progress; also tells the back end the worker is alive."""

    def heartbeat(self, job: Job) -> None:  # noqa: B027 - only back ends that reclaim need it
        """Tell the back end the worker holding `job` is alive, between progress reports (model
        loading, a slow step). Raises JobLost if another worker owns the job now."""

    @abc.abstractmethod
    def cancel_requested(self, job_id: str) -> bool: ...

    @abc.abstractmethod
    def finish(self, job: Job, status: JobStatus, error: str | None = None) -> None:
        """Mark the job SUCCEEDED, CANCELLED or FAILED (no retry) and release it."""

    @abc.abstractmethod
    def retry(self, job: Job, error: str) -> bool:
        """A failure worth another try: re-queue, or past max attempts fail it into the dead
        letters. Returns True if it was re-queued."""

    @abc.abstractmethod
    def put_result(self, job: Job, index: int, data: bytes, ext: str) -> str:
        """Store one result file; returns its name (recorded on the job by `finish`)."""

    @abc.abstractmethod
    def get_result(self, job_id: str, name: str) -> bytes | None: ...

    # --- voice pressure and worker statistics --------------------------------------------------
    @abc.abstractmethod
    def publish_pressure(self, pressure: dict[str, Any]) -> None:
        """Server side: how much voice needs the CPU now (read by the workers' gate)."""

    @abc.abstractmethod
    def read_pressure(self) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    def push_stats(self, stats: dict[str, Any]) -> None:
        """Worker side: step and pause timings of a job, for the server's metrics."""

    @abc.abstractmethod
    def drain_stats(self, limit: int = 1000) -> list[dict[str, Any]]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def result_name(index: int, ext: str) -> str:
    return f"{index}.{ext}"
