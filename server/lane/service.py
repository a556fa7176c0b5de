"""Server side of the lane: the queue, local worker subprocesses, voice-pressure publishing,
metrics and retention. Imports no torch: generation happens in the worker processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from kombain.server.lane.backends import open_queue
from kombain.server.lane.jobs import LaneError, Limits
from kombain.server.lane.queue import JobQueue
from kombain.server.lane.worker import queue_config
from kombain.server.metrics import Metrics
from kombain.server.settings import Settings

log = logging.getLogger("kombain.lane")
T = TypeVar("T")


@dataclass
class _WorkerProc:
    id: str
    proc: subprocess.Popen[bytes]
    started: float


class LaneService:
    """Owns the lane for one server process; handlers reach it as `services.lane`. `pressure(now)`
    measures voice load, which it publishes for the workers' gate (gate.measure_pressure)."""

    def __init__(self, settings: Settings, metrics: Metrics, pressure: Callable[[float], dict[str, Any]]) -> None:
        self.settings, self.metrics, self._pressure = settings, metrics, pressure
        self.queue: JobQueue = open_queue(settings.queue, queue_config(settings))
        self.limits = Limits(
            max_size=settings.lane_max_size, max_images=settings.lane_max_images,
            default_steps=settings.lane_default_steps, max_steps=settings.lane_max_steps,
            max_frames=settings.lane_max_frames, fps=settings.lane_video_fps,
            max_prompt_chars=settings.lane_max_prompt_chars,
        )
        self._workers: list[_WorkerProc] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a (blocking) queue call off the event loop; an unreachable back end is a 503."""
        try:
            return await asyncio.to_thread(fn, *args)
        except self.queue.transient_errors as exc:
            raise LaneError(503, f"job queue unavailable: {exc}", "queue_unavailable",
                            type_="server_error") from exc

    async def start(self) -> None:
        recovered = await asyncio.to_thread(self.queue.recover)
        if recovered:
            log.info("re-queued %d jobs left running by the previous process", recovered)
        workers = self.settings.lane_workers
        if workers and not (self.settings.image_model or self.settings.video_model):
            # Every submission is refused (model_not_configured) anyway: no idle worker process
            # holding a few hundred MB of torch for nothing.
            log.info("no image or video model configured: not starting lane workers")
            workers = 0
        for i in range(workers):
            self._spawn(f"{os.uname().nodename}-{os.getpid()}-w{i}")
        for name, loop in (("lane-pressure", self._publish_pressure),
                           ("lane-metrics", self._collect_metrics),
                           ("lane-supervise", self._supervise), ("lane-retention", self._retention)):
            self._tasks.append(asyncio.create_task(loop(), name=name))

    async def aclose(self) -> None:
        """Stop background loops, ask workers to stop (their running jobs go back to the queue)."""
        self._closing = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                if (me := asyncio.current_task()) is not None and me.cancelling():
                    raise  # aclose itself is being cancelled; the loop's own cancel is expected
        for w in self._workers:
            if w.proc.poll() is None:
                w.proc.terminate()
        for w in self._workers:
            try:
                await asyncio.to_thread(w.proc.wait, 10)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                await asyncio.to_thread(w.proc.wait)
        await asyncio.to_thread(self.queue.close)

    # --- worker subprocesses ------------------------------------------------------------------
    def _spawn(self, worker_id: str) -> None:
        env = dict(os.environ) | settings_env(self.settings)
        proc = subprocess.Popen(
            [sys.executable, "-m", "kombain.server.cli", "worker", "--worker-id", worker_id,
             "--parent-pid", str(os.getpid())], env=env,
        )
        log.info("started lane worker %s (pid %d)", worker_id, proc.pid)
        self._workers.append(_WorkerProc(worker_id, proc, time.monotonic()))

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            for w in list(self._workers):
                code = w.proc.poll()
                if code is None or self._closing:
                    continue
                log.warning("lane worker %s exited with %s; restarting", w.id, code)
                self._workers.remove(w)
                with contextlib.suppress(*self.queue.transient_errors):
                    await asyncio.to_thread(self.queue.release_worker, w.id)
                if time.monotonic() - w.started < 5:
                    await asyncio.sleep(5)  # a crash loop should not eat the CPU voice needs
                self._spawn(w.id)

    # --- voice pressure, metrics, retention ----------------------------------------------------
    async def _publish_pressure(self) -> None:
        last: tuple[int, int] | None = None
        last_sent = 0.0
        errors: tuple[type[BaseException], ...] = (OSError, *self.queue.transient_errors)
        while True:
            now = time.time()
            p = self._pressure(now)
            key = (p["pending"], p["sessions"])
            # On change at once; otherwise a refresh well inside the workers' staleness window.
            if key != last or now - last_sent > 1.0:
                try:
                    await asyncio.to_thread(self.queue.publish_pressure, p)
                    last, last_sent = key, now
                except errors as exc:
                    log.debug("cannot publish voice pressure: %s", exc)
            await asyncio.sleep(0.05)

    async def _collect_metrics(self) -> None:
        m = self.metrics
        while True:
            try:
                counts = await asyncio.to_thread(self.queue.counts)
                m.lane_queue_depth.set(counts["queued"])
                m.lane_jobs_running.set(counts["running"])
                for s in await asyncio.to_thread(self.queue.drain_stats):
                    m.observe_lane_job(s["kind"], s.get("status", "failed"), s.get("steps", []),
                                       float(s.get("paused", 0.0)))
            except self.queue.transient_errors as exc:
                log.debug("lane metrics: queue unavailable: %s", exc)
            await asyncio.sleep(1.0)

    async def _retention(self) -> None:
        while True:
            cutoff = time.time() - self.settings.lane_retention_hours * 3600
            try:
                n = await asyncio.to_thread(self.queue.purge, cutoff)
                if n:
                    log.info("deleted %d finished lane jobs past retention", n)
            except self.queue.transient_errors as exc:
                log.debug("lane retention: queue unavailable: %s", exc)
            await asyncio.sleep(60)


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as KOMBAIN_* variables, so a worker subprocess sees what the server sees."""
    out = {}
    for f in fields(settings):
        v = getattr(settings, f.name)
        out["KOMBAIN_" + f.name.upper()] = ("1" if v else "0") if isinstance(v, bool) else str(v)
    return out
