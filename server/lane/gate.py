"""Voice-priority gate: the server publishes how busy voice is, workers pause between steps.

Pure decisions here; the worker supplies the reads, the clock and the sleep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

# A pressure record older than this is ignored: a dead server must not stop the workers.
STALE_S = 3.0


class _Queued(Protocol):
    @property
    def pending(self) -> int: ...


class _Calls(Protocol):
    @property
    def busy(self) -> int: ...
    @property
    def count(self) -> int: ...


def measure_pressure(models: Iterable[_Queued | None], calls: _Calls, now: float) -> dict[str, Any]:
    """What the server publishes: voice work queued or running (speech recognition and synthesis,
    None where not loaded; calls in a turn or a reply), and live calls."""
    pending = sum(m.pending for m in models if m is not None) + calls.busy
    return {"pending": pending, "sessions": calls.count, "ts": now}


@dataclass(frozen=True, slots=True)
class GatePolicy:
    """When a worker pauses. A threshold of 0 disables that condition."""

    enabled: bool = True
    pending: int = 1
    sessions: int = 0
    max_pause_s: float = 30.0


def voice_busy(pressure: dict[str, Any] | None, policy: GatePolicy, now: float) -> bool:
    """True while voice needs the CPU more than the lane does."""
    if not policy.enabled or not pressure or now - float(pressure.get("ts", 0)) > STALE_S:
        return False
    if policy.pending and int(pressure.get("pending", 0)) >= policy.pending:
        return True
    return bool(policy.sessions and int(pressure.get("sessions", 0)) >= policy.sessions)


def wait_for_voice(
    read: Callable[[], dict[str, Any] | None],
    policy: GatePolicy,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    tick: Callable[[], None] = lambda: None,
    poll_s: float = 0.02,
) -> float:
    """Block while voice is busy (at most `max_pause_s`); returns the seconds paused.

    `tick` runs about once a second while paused (heartbeat, cancel check: it may raise)."""
    start = clock()
    last_tick = start
    while voice_busy(read(), policy, clock()):
        now = clock()
        if now - start >= policy.max_pause_s:
            break
        if now - last_tick >= 1.0:
            tick()
            last_tick = now
        sleep(poll_s)
    return clock() - start
