"""SynthExecutor: priority order, cancel before start, bounded queue."""

from __future__ import annotations

import threading

import pytest

from kombain.streaming.synth_executor import NORMAL, URGENT, Overloaded, SynthExecutor


def test_urgent_jobs_jump_the_queue_and_cancelled_jobs_never_run() -> None:
    ex = SynthExecutor(workers=1, max_queue=8)
    gate = threading.Event()
    order: list[str] = []
    blocker = ex.submit(NORMAL, gate.wait)
    later = [ex.submit(NORMAL, order.append, f"normal{i}") for i in range(2)]
    dropped = ex.submit(NORMAL, order.append, "dropped")
    urgent = ex.submit(URGENT, order.append, "urgent")
    assert dropped.cancel()
    gate.set()
    for f in [blocker, *later, urgent]:
        f.result(timeout=5)
    assert order == ["urgent", "normal0", "normal1"]
    ex.shutdown()


def test_full_queue_rejects_and_errors_reach_the_caller() -> None:
    ex = SynthExecutor(workers=1, max_queue=1)
    gate = threading.Event()
    running = threading.Event()
    ex.submit(NORMAL, lambda: (running.set(), gate.wait()))
    running.wait(5)
    queued = ex.submit(NORMAL, int, "1")
    with pytest.raises(Overloaded):
        ex.submit(NORMAL, int, "2")
    gate.set()
    assert queued.result(timeout=5) == 1
    with pytest.raises(ValueError):
        ex.submit(NORMAL, int, "x").result(timeout=5)
    ex.shutdown()
    with pytest.raises(RuntimeError):
        ex.submit(NORMAL, int, "3")
