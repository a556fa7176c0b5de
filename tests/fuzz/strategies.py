"""Shared hypothesis strategies and helpers for the fuzz tests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


def fuzz(max_examples: int) -> settings:
    """Settings for one fuzz test: its own example count (the folder stays well under a minute),
    no per-example deadline (a cold cache makes the first examples slow)."""
    return settings(max_examples=max_examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


json_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                | st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
# Any Python value json.dumps can write; unhashable values where a parser expects a string are
# the classic crash (`dict.get(["x"])`).
hostile_values = st.one_of(json_values, st.lists(st.text(max_size=4), min_size=1, max_size=2),
                           st.dictionaries(st.text(max_size=4), st.integers(), min_size=1, max_size=2))


@st.composite
def mutated(draw: Any, corpus: list[bytes], max_ops: int = 8) -> bytes:
    """A valid message from `corpus` with a few bytes flipped, inserted, deleted or cut off."""
    data = bytearray(draw(st.sampled_from(corpus)))
    inserts = [b"\r\n", b":", b";", b",", b"<", b">", b'"', b"\\", b" ", b"\x00", b"\r\n ", b"=", b"\xff",
               b"9" * 20, b"/", b"[", b"]"]
    for _ in range(draw(st.integers(0, max_ops))):
        op = draw(st.integers(0, 3))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == 0 and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == 1:
            data[pos:pos] = draw(st.sampled_from(inserts) | st.binary(max_size=6))
        elif op == 2:
            del data[pos:pos + draw(st.integers(1, 40))]
        else:
            data = data[:pos]
    return bytes(data)


def timed(fn: Callable[[], Any], budget_s: float) -> float:
    """Run `fn` (ignoring the exception it may raise) and assert it took under `budget_s`."""
    start = time.perf_counter()
    try:
        fn()
    except Exception:  # the caller checks the exception types; this only measures the work
        pass
    took = time.perf_counter() - start
    assert took < budget_s, f"{took:.3f} s, budget {budget_s} s"
    return took


def dumps(value: Any) -> str:
    return json.dumps(value)


KIB64 = 64 * 1024
