"""Per-key limits: request rate (PyPI `limits`), concurrent calls and unfinished lane jobs.

Every count is keyed by the caller's subject (an API key's fingerprint, a JWT `sub`, or the
client IP when auth is off) and kept in this process: on a multi-node deployment each limit
holds per node.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

_MAX_TRACKED_JOBS = 10_000  # owners recorded per node; the oldest are forgotten past it


class OverLimit(Exception):
    """A limit is reached: 429 with `Retry-After`."""

    def __init__(self, message: str, code: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.message, self.code, self.retry_after_s = message, code, retry_after_s


class Quotas:
    """The node's per-subject limits; each is off at 0 / "" (see Settings.rate_limit and key_max_*)."""

    def __init__(self, rate_limit: str = "", max_calls: int = 0, max_queued_jobs: int = 0,
                 clock: Callable[[], float] = time.time) -> None:
        try:
            self.rate: RateLimitItem | None = parse(rate_limit) if rate_limit.strip() else None
        except ValueError as exc:
            raise ValueError(f"rate_limit: cannot parse {rate_limit!r} (e.g. '120/minute')") from exc
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self.max_calls, self.max_queued_jobs = max_calls, max_queued_jobs
        self._calls: dict[str, int] = {}
        self._jobs: dict[str, str] = {}  # job id -> owner, in submission order
        self._clock = clock

    # --- request rate ----------------------------------------------------------------------------

    def hit(self, subject: str) -> None:
        """Count one request; OverLimit if the subject is past the rate."""
        if self.rate is None or self._limiter.hit(self.rate, subject):
            return
        reset = self._limiter.get_window_stats(self.rate, subject).reset_time
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
