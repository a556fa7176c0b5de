"""`kombain worker`: claim lane jobs, run them through diffusers, report progress and results.

Runs in its own process (started by the server, or by hand on another host for Redis), so torch
never enters the voice process. Between denoising steps it checks cancel and the voice gate.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kombain.server.lane.backends import open_queue
from kombain.server.lane.gate import GatePolicy, wait_for_voice
from kombain.server.lane.jobs import Job, JobStatus, LaneError
from kombain.server.lane.queue import JobLost, JobQueue, QueueConfig
from kombain.server.settings import Settings

log = logging.getLogger("kombain.lane.worker")
T = TypeVar("T")


class JobCancelled(Exception):
    """Raised from the step callback to stop the pipeline of a cancelled job."""


class WorkerStopping(Exception):
    """Raised from the step callback when the worker was asked to exit."""


def queue_config(s: Settings) -> QueueConfig:
    return QueueConfig(
        data_dir=s.data_dir, queue_limit=s.lane_queue_limit, max_attempts=s.lane_max_attempts,
        reclaim_idle_s=s.lane_reclaim_idle_s, retention_s=s.lane_retention_hours * 3600,
    )


class Worker:
    """One worker: a loop of claim -> generate -> store; `generator` runs one job."""

    def __init__(self, queue: JobQueue, generator: Any, policy: GatePolicy, worker_id: str,
                 stop: threading.Event | None = None, parent_pid: int | None = None) -> None:
        self.queue, self.generator, self.policy, self.id = queue, generator, policy, worker_id
        self.stop = stop or threading.Event()
        self.parent_pid = parent_pid

    def stopping(self) -> bool:
        """Asked to exit, or the server that started us is gone (then it cannot stop us)."""
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            self.stop.set()
        return self.stop.is_set()

    def run_forever(self, idle_sleep: float = 0.2) -> None:
        while not self.stopping():
            try:
                job = self.queue.claim(self.id)
            except self.queue.transient_errors as exc:
                log.warning("queue unavailable (%s); retrying", exc)
                self.stop.wait(1.0)
                continue
            if job is None:
                self.stop.wait(idle_sleep)
                continue
            self.run_job(job)

    def run_job(self, job: Job) -> None:
        """Run one claimed job to a final state (or back to the queue)."""
        log.info("job %s (%s) attempt %d", job.id, job.kind.value, job.attempts)
        stats: dict[str, Any] = {"kind": job.kind.value, "steps": [], "paused": 0.0}
        last = time.perf_counter()

        def on_step(i: int, n: int) -> None:
            nonlocal last
            stats["steps"].append(time.perf_counter() - last)
            self._soft(lambda: self.queue.progress(job, i, n), None)
            self._check(job)

            def tick() -> None:  # while paused: heartbeat, and still honour cancel and stop
                self._soft(lambda: self.queue.progress(job, i, n), None)
                self._check(job)

            stats["paused"] += wait_for_voice(
                self._read_pressure, self.policy, time.time, time.sleep, tick=tick
            )
            last = time.perf_counter()

        status = "failed"
        beat = _Heartbeat(self.queue, job, self._soft)
        try:
            if self._soft(lambda: self.queue.cancel_requested(job.id), False):
                raise JobCancelled
            beat.start()
            files = self.generator.run(job, beat.checked(on_step))
            beat.stop()
            beat.raise_if_lost()
            job.results = [self._hard(functools.partial(self.queue.put_result, job, i, data, ext))
                           for i, (data, ext) in enumerate(files)]
            self._hard(lambda: self.queue.finish(job, JobStatus.SUCCEEDED))
            status = "succeeded"
        except JobCancelled:
            self._hard(lambda: self.queue.finish(job, JobStatus.CANCELLED, "cancelled"))
            status = "cancelled"
        except JobLost as exc:
            log.warning("%s", exc)
            status = "lost"
        except WorkerStopping:
            self._hard(lambda: self.queue.retry(job, "worker stopped while running the job"))
            status = "requeued"
        except LaneError as exc:
            message = exc.message
            self._hard(lambda: self.queue.finish(job, JobStatus.FAILED, message))
        except Exception as exc:
            log.exception("job %s failed", job.id)
            reason = f"{type(exc).__name__}: {exc}"
            requeued = self._hard(lambda: self.queue.retry(job, reason))
            status = "requeued" if requeued else "failed"
        finally:
            beat.stop()
        log.info("job %s %s", job.id, status)
        stats["status"] = status
        self._soft(lambda: self.queue.push_stats(stats), None)

    def _check(self, job: Job) -> None:
        if self.stopping():
            raise WorkerStopping
        if self._soft(lambda: self.queue.cancel_requested(job.id), False):
            raise JobCancelled

    def _read_pressure(self) -> dict[str, Any] | None:
        return self._soft(self.queue.read_pressure, None)

    def _soft(self, fn: Callable[[], T], default: T) -> T:
        """A call that may be skipped while the back end is away (progress, cancel checks)."""
        try:
            return fn()
        except self.queue.transient_errors:
            return default

    def _hard(self, fn: Callable[[], T], deadline_s: float = 600.0) -> T:
        """A call that must land (results, final state): retry while the back end is away."""
        end = time.monotonic() + deadline_s
        while True:
            try:
                return fn()
            except self.queue.transient_errors as exc:
                if time.monotonic() > end:
                    raise
                log.warning("queue unavailable (%s); retrying", exc)
                time.sleep(0.5)


class _Heartbeat:
    """Keeps a claimed job's lease fresh from a side thread while the job runs, so a live
    worker never looks dead to the others however long a model load or a step takes. If
    another worker took the job meanwhile, the next step (or the end of the run) raises JobLost."""

    def __init__(self, queue: JobQueue, job: Job, soft: Callable[[Callable[[], None], None], None]) -> None:
        self.queue, self.job, self.soft = queue, job, soft
        self.interval = max(0.1, queue.config.reclaim_idle_s / 4)
        self.done = threading.Event()
        self.lost: JobLost | None = None
        self.thread = threading.Thread(target=self._run, name=f"heartbeat-{job.id}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        if self.thread.is_alive():
            self.thread.join()

    def _run(self) -> None:
        while not self.done.wait(self.interval):
            try:
                self.soft(lambda: self.queue.heartbeat(self.job), None)
            except JobLost as exc:
                self.lost = exc
                return

    def raise_if_lost(self) -> None:
        if self.lost is not None:
            raise self.lost

    def checked(self, on_step: Callable[[int, int], None]) -> Callable[[int, int], None]:
        def step(i: int, n: int) -> None:
            self.raise_if_lost()
            on_step(i, n)

        return step


def run_worker(settings: Settings, worker_id: str | None = None, parent_pid: int | None = None) -> int:
    """Entry point of `kombain worker`: limit threads, load lazily, loop until SIGTERM/SIGINT."""
    threads = max(1, settings.lane_threads)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    if settings.lane_nice > 0:
        os.nice(settings.lane_nice)
    from kombain.server.lane.generate import Generator

    worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
    queue = open_queue(settings.queue, queue_config(settings))
    generator = Generator(settings.image_model, settings.video_model, threads=threads)
    policy = GatePolicy(
        enabled=settings.lane_gate, pending=settings.lane_gate_pending,
        sessions=settings.lane_gate_sessions, max_pause_s=settings.lane_gate_max_pause_s,
    )
    worker = Worker(queue, generator, policy, worker_id, parent_pid=parent_pid)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop.set())
    log.info("worker %s on %s (threads=%d, device=%s)", worker_id, settings.queue, threads,
             generator.device)
    try:
        worker.run_forever()
    finally:
        queue.close()
    return 0
