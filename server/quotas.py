"""Per-key limits: request rate (PyPI `limits`), concurrent calls and unfinished lane jobs.

Every count is keyed by the caller's subject (an API key's fingerprint, a JWT `sub`, or the
client IP when auth is off). The request rate is kept in this process, or in Redis
(`rate_limit_storage`) so that it holds across nodes; concurrent calls and jobs are per node.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

log = logging.getLogger("kombain.quotas")
_WARN_EVERY_S = 60.0

_MAX_TRACKED_JOBS = 10_000  # owners recorded per node; the oldest are forgotten past it


class OverLimit(Exception):
    """A limit is reached: 429 with `Retry-After`."""

    def __init__(self, message: str, code: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.message, self.code, self.retry_after_s = message, code, retry_after_s


class Quotas:
    """The node's per-subject limits; each is off at 0 / "" (see Settings.rate_limit and key_max_*)."""

    def __init__(self, rate_limit: str = "", max_calls: int = 0, max_queued_jobs: int = 0,
                 clock: Callable[[], float] = time.time, storage: str = "",
                 on_storage_error: Callable[[], None] | None = None) -> None:
        try:
            self.rate: RateLimitItem | None = parse(rate_limit) if rate_limit.strip() else None
        except ValueError as exc:
            raise ValueError(f"rate_limit: cannot parse {rate_limit!r} (e.g. '120/minute')") from exc
        self.shared = bool(storage.strip())
        if self.shared and not storage.startswith(("redis://", "rediss://")):
            raise ValueError(f"rate_limit_storage: {storage!r} is not a redis:// or rediss:// URL")
        backend = (storage_from_string("async+" + storage.strip(), implementation="redispy", wrap_exceptions=True)
                   if self.shared else MemoryStorage())
        self._limiter = MovingWindowRateLimiter(backend)  # type: ignore[arg-type]
        self._on_storage_error = on_storage_error or (lambda: None)
        self._warned_at = -_WARN_EVERY_S
        self.max_calls, self.max_queued_jobs = max_calls, max_queued_jobs
        self._calls: dict[str, int] = {}
        self._jobs: dict[str, str] = {}  # job id -> owner, in submission order
        self._clock = clock

    # --- request rate ----------------------------------------------------------------------------

    async def hit(self, subject: str) -> None:
        """Count one request; OverLimit if the subject is past the rate. If the shared store is
        unreachable the request goes through (a warning a minute, and a metric): an outage of
        the limiter's Redis should not take the API down with it."""
        if self.rate is None:
            return
        try:
            if await self._limiter.hit(self.rate, subject):
                return
            reset = (await self._limiter.get_window_stats(self.rate, subject)).reset_time
        except StorageError as exc:
            self._on_storage_error()
            if time.monotonic() - self._warned_at >= _WARN_EVERY_S:
                self._warned_at = time.monotonic()
                log.warning("rate-limit store unreachable, requests are not limited meanwhile: %s", exc)
            return
        wait = max(1, math.ceil(reset - self._clock()))
        raise OverLimit(f"rate limit of {self.rate} reached; retry in {wait} s", "rate_limit_exceeded", wait)

    # --- concurrent calls ------------------------------------------------------------------------

    def open_call(self, subject: str) -> Callable[[], None]:
        """Count a call for the subject; returns its release (idempotent). OverLimit if at the cap."""
        if self.max_calls <= 0:
            return lambda: None
        if self._calls.get(subject, 0) >= self.max_calls:
            raise OverLimit(f"this key already has {self.max_calls} concurrent calls; retry when one ends",
                            "too_many_calls", 5)
        self._calls[subject] = self._calls.get(subject, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            left = self._calls.get(subject, 1) - 1
            if left > 0:
                self._calls[subject] = left
            else:
                self._calls.pop(subject, None)

        return release

    def calls(self, subject: str) -> int:
        return self._calls.get(subject, 0)

    # --- lane jobs -------------------------------------------------------------------------------

    def jobs_of(self, subject: str) -> list[str]:
        return [job_id for job_id, owner in self._jobs.items() if owner == subject]

    def check_jobs(self, subject: str, unfinished: Iterable[str]) -> None:
        """`unfinished`: the subject's recorded jobs still queued or running. OverLimit at the cap."""
        live = set(unfinished)
        for job_id in self.jobs_of(subject):
            if job_id not in live:
                self._jobs.pop(job_id, None)
        if self.max_queued_jobs > 0 and len(live) >= self.max_queued_jobs:
            raise OverLimit(f"this key already has {self.max_queued_jobs} unfinished lane jobs; retry later",
                            "too_many_queued_jobs", 10)

    def record_job(self, subject: str, job_id: str) -> None:
        self._jobs[job_id] = subject
        while len(self._jobs) > _MAX_TRACKED_JOBS:
            self._jobs.pop(next(iter(self._jobs)))
