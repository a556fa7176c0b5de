"""Worker threads for synthesis behind a bounded priority queue: a reply's first chunk goes first."""

from __future__ import annotations

import concurrent.futures
import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any

URGENT = 0  # the first chunk of a reply: someone is waiting in silence for it
NORMAL = 1  # later chunks: synthesised while earlier audio plays


class Overloaded(RuntimeError):
    """The synthesis queue is full; the caller should refuse the request (503)."""


class SynthExecutor:
    """`workers` threads taking jobs by (priority, arrival); at most `max_queue` jobs waiting.

    A plain ThreadPoolExecutor serves jobs in arrival order, so one caller's long text would
    make every new caller wait for it. Here the first chunk of a reply jumps the queue, and
    callers submit one chunk at a time, so a long text never holds a worker for long.
    """

    def __init__(
        self,
        workers: int,
        max_queue: int = 256,
        name: str = "tts",
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._queue: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue(max_queue)
        self._seq = itertools.count()
        self._on_depth = on_depth
        self._closed = False
        self._running = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    @property
    def workers(self) -> int:
        return len(self._threads)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def depth(self) -> int:
        """Jobs waiting for a worker."""
        return self._queue.qsize()

    @property
    def pending(self) -> int:
        """Jobs waiting or running (voice pressure for the GPU lane's gate)."""
        return self._queue.qsize() + self._running

    def submit(self, priority: int, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """Queue `fn(*args)`; never blocks. Cancel the future to drop the job if it has not started."""
        if self._closed:
            raise RuntimeError("synthesis executor is shut down")
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            self._queue.put_nowait((priority, next(self._seq), (fut, fn, args)))
        except queue.Full:
            raise Overloaded("speech synthesis is overloaded; try again later") from None
        self._report_depth()
        return fut

    def shutdown(self, wait: bool = True) -> None:
        """Cancel waiting jobs, let running ones finish, stop the threads."""
        self._closed = True
        while True:
            try:
                _, _, job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
        for _ in self._threads:
            self._queue.put((1 << 30, next(self._seq), None))
        if wait:
            for t in self._threads:
                t.join()

    def _work(self) -> None:
        while True:
            _, _, job = self._queue.get()
            self._report_depth()
            if job is None:
                return
            fut, fn, args = job
            if not fut.set_running_or_notify_cancel():
                continue  # cancelled while waiting
            self._running += 1  # only read as a hint; a racy count is fine
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting caller, not swallowed
                fut.set_exception(exc)
            else:
                fut.set_result(result)
            finally:
                self._running -= 1

    def _report_depth(self) -> None:
        if self._on_depth is not None:
            self._on_depth(self._queue.qsize())
