"""Time that moves only when a task sleeps: lifecycle and pacing tests without waiting."""

from __future__ import annotations

import asyncio


class FakeClock:
    """`clock()` reads the time; `await clock.sleep(d)` moves it on by `d` and yields once, so a
    watchdog or a pacer runs its whole life in milliseconds of real time."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)
