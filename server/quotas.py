"""Per-key limits: request rate (PyPI `limits`), concurrent calls and unfinished lane jobs.

Every count is keyed by the caller's subject (an API key's fingerprint, a JWT `sub`, or the
client IP when auth is off). They are kept in this process, or in Redis (`rate_limit_storage`) so
that they hold across nodes.

Calls in Redis are leases: one sorted set per subject, a member per live call scored by its expiry
on Redis's clock. A node renews its calls' leases every third of `_LEASE_TTL_S`; those of a node that
died lapse after `_LEASE_TTL_S` (30 s), so its callers get their slots back within that. While Redis is
unreachable each node counts its own calls, as without a store.

Lane jobs in Redis: a set per subject of the jobs it submitted, pruned of finished ones at each
check (the lane's queue says which are). The check is not a reservation: two submissions racing on
two nodes may both pass it, so a key can briefly hold one job more per node than its cap.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Final

import redis.asyncio as aioredis
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string
from redis.exceptions import RedisError

log = logging.getLogger("kombain.quotas")
_WARN_EVERY_S = 60.0

_MAX_TRACKED_JOBS = 10_000  # owners recorded per node; the oldest are forgotten past it
_LEASE_TTL_S: Final = 30.0  # a call's lease in Redis lapses this long after its node stops renewing it
_JOBS_TTL_S: Final = 7 * 86400  # an owner's job set, idle this long, is dropped (jobs are kept less)
_STORE_ERRORS: Final = (RedisError, OSError)

# KEYS[1]: the subject's set. ARGV: cap, member, ttl ms. Expired leases go first; 1 if taken.
_ACQUIRE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""
# KEYS[1]: the subject's set. ARGV: member, ttl ms. A live call's lease, renewed (or put back,
# had it lapsed while Redis was unreachable: the call still runs).
_RENEW: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""


class OverLimit(Exception):
    """A limit is reached: 429 with `Retry-After`."""

    def __init__(self, message: str, code: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.message, self.code, self.retry_after_s = message, code, retry_after_s


def _subject_key(kind: str, subject: str) -> str:
    tail = subject if len(subject) <= 128 else hashlib.sha256(subject.encode()).hexdigest()
    return f"kombain:{kind}:{tail}"


class StoreUnreachable(Exception):
    """The shared store did not answer."""


class SharedCalls:
    """Concurrent calls counted in Redis as leases (see the module docstring)."""

    def __init__(self, client: Any, *, ttl_s: float = _LEASE_TTL_S,
                 on_error: Callable[[Exception], None] = lambda exc: None) -> None:
        self._redis = client  # redis.asyncio.Redis
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._renew = self._redis.register_script(_RENEW)
        self._ttl_ms, self._renew_s = int(ttl_s * 1000), ttl_s / 3
        self._on_error = on_error
        self._node = uuid.uuid4().hex[:12]
        self._leases: dict[str, str] = {}  # member -> the subject's key, for this node's live calls
        self._renewer: asyncio.Task[None] | None = None
        self._removals: set[asyncio.Task[None]] = set()

    async def acquire(self, subject: str, cap: int) -> str | None:
        """A lease for one more call, or None if the subject holds `cap` across all nodes.
        StoreUnreachable if Redis does not answer."""
        key, member = _subject_key("calls", subject), f"{self._node}:{uuid.uuid4().hex}"
        try:
            taken = await self._acquire(keys=[key], args=[cap, member, self._ttl_ms])
        except _STORE_ERRORS as exc:
            raise StoreUnreachable(str(exc)) from exc
        if not taken:
            return None
        self._leases[member] = key
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_loop(), name="call-leases")
        return member

    def release(self, member: str) -> None:
        key = self._leases.pop(member, None)
        if key is not None:
            task = asyncio.get_running_loop().create_task(self._remove(key, member))
            self._removals.add(task)
            task.add_done_callback(self._removals.discard)

    async def _remove(self, key: str, member: str) -> None:
        try:
            await self._redis.zrem(key, member)
        except _STORE_ERRORS as exc:  # the lease lapses by itself
            self._on_error(exc)

    async def renew(self) -> None:
        """Renew every live call's lease now (the renewer does this every third of the TTL)."""
        leases = list(self._leases.items())
        if not leases:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for member, key in leases:
                    await self._renew(keys=[key], args=[member, self._ttl_ms], client=pipe)
                await pipe.execute()
        except _STORE_ERRORS as exc:
            self._on_error(exc)

    async def _renew_loop(self) -> None:
        while self._leases:
            await asyncio.sleep(self._renew_s)
            await self.renew()

    def forget(self) -> None:
        """Stop renewing without releasing (what a node that dies does; for tests)."""
        self._leases.clear()
        if self._renewer is not None:
            self._renewer.cancel()

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        for member in list(self._leases):
            self.release(member)
        if self._removals:
            await asyncio.wait(self._removals, timeout=2.0)


class Quotas:
    """The node's per-subject limits; each is off at 0 / "" (see Settings.rate_limit and key_max_*)."""

    def __init__(self, rate_limit: str = "", max_calls: int = 0, max_queued_jobs: int = 0,
                 clock: Callable[[], float] = time.time, storage: str = "",
                 on_storage_error: Callable[[], None] | None = None, lease_ttl_s: float = _LEASE_TTL_S) -> None:
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
        self._redis: Any = None  # redis.asyncio.Redis for the calls and jobs, when shared
        if self.shared and (max_calls > 0 or max_queued_jobs > 0):
            self._redis = aioredis.Redis.from_url(storage.strip(), socket_timeout=1.0, socket_connect_timeout=1.0)
        self._shared_calls = (SharedCalls(self._redis, ttl_s=lease_ttl_s, on_error=self._store_failed)
                              if self._redis is not None and max_calls > 0 else None)
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
            self._store_failed(exc)
            return
        wait = max(1, math.ceil(reset - self._clock()))
        raise OverLimit(f"rate limit of {self.rate} reached; retry in {wait} s", "rate_limit_exceeded", wait)

    def _store_failed(self, exc: Exception) -> None:
        self._on_storage_error()
        if time.monotonic() - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = time.monotonic()
            log.warning("limits store unreachable; meanwhile requests are not rate-limited and calls "
                        "are counted per node: %s", exc)

    # --- concurrent calls ------------------------------------------------------------------------

    async def open_call(self, subject: str) -> Callable[[], None]:
        """Count a call for the subject (across nodes with a shared store); returns its release
        (idempotent). OverLimit if at the cap."""
        if self.max_calls <= 0:
            return lambda: None
        lease: str | None = None
        full = self._calls.get(subject, 0) >= self.max_calls  # by this node's own count
        if self._shared_calls is not None:
            try:
                lease = await self._shared_calls.acquire(subject, self.max_calls)
                full = lease is None  # the store counts every node's calls, this one's too
            except StoreUnreachable as exc:
                self._store_failed(exc)
        if full:
            raise OverLimit(f"this key already has {self.max_calls} concurrent calls; retry when one ends",
                            "too_many_calls", 5)
        self._calls[subject] = self._calls.get(subject, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            if lease is not None and self._shared_calls is not None:
                self._shared_calls.release(lease)
            left = self._calls.get(subject, 1) - 1
            if left > 0:
                self._calls[subject] = left
            else:
                self._calls.pop(subject, None)

        return release

    def calls(self, subject: str) -> int:
        """The subject's calls on this node."""
        return self._calls.get(subject, 0)

    def forget_calls(self) -> None:
        """Stop renewing this node's leases without releasing them: what a node that dies does
        (for tests of the lapse)."""
        if self._shared_calls is not None:
            self._shared_calls.forget()

    async def aclose(self) -> None:
        """Release this node's leases in the shared store (a drained node's calls have ended)."""
        if self._shared_calls is not None:
            await self._shared_calls.aclose()
        if self._redis is not None:
            await self._redis.aclose()

    # --- lane jobs -------------------------------------------------------------------------------

    async def jobs_of(self, subject: str) -> list[str]:
        """The subject's recorded jobs (finished ones too, until `check_jobs` prunes them): from
        the shared store, across nodes; this node's own record while there is no store or it is
        unreachable."""
        if self._redis is not None and self.max_queued_jobs > 0:
            try:
                shared = await self._redis.smembers(_subject_key("jobs", subject))
                return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in shared)
            except _STORE_ERRORS as exc:
                self._store_failed(exc)
        return [job_id for job_id, owner in self._jobs.items() if owner == subject]

    async def check_jobs(self, subject: str, recorded: Iterable[str], unfinished: Iterable[str]) -> None:
        """`recorded`: what `jobs_of` gave; `unfinished`: those still queued or running. The finished
        are forgotten; OverLimit at the cap."""
        live = set(unfinished)
        done = [job_id for job_id in recorded if job_id not in live]
        for job_id in done:
            self._jobs.pop(job_id, None)
        if done and self._redis is not None:
            try:
                await self._redis.srem(_subject_key("jobs", subject), *done)
            except _STORE_ERRORS as exc:
                self._store_failed(exc)
        if self.max_queued_jobs > 0 and len(live) >= self.max_queued_jobs:
            raise OverLimit(f"this key already has {self.max_queued_jobs} unfinished lane jobs; retry later",
                            "too_many_queued_jobs", 10)

    async def record_job(self, subject: str, job_id: str) -> None:
        self._jobs[job_id] = subject
        while len(self._jobs) > _MAX_TRACKED_JOBS:
            self._jobs.pop(next(iter(self._jobs)))
        if self._redis is None or self.max_queued_jobs <= 0:
            return
        key = _subject_key("jobs", subject)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.sadd(key, job_id)
                pipe.expire(key, _JOBS_TTL_S)
                await pipe.execute()
        except _STORE_ERRORS as exc:
            self._store_failed(exc)
