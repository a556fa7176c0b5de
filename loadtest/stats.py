"""Percentiles and summaries for load-test samples."""

from __future__ import annotations

import numpy as np


def summary(samples: list[float]) -> dict[str, float | int | None]:
    """count, p50/p95/p99 and max, in milliseconds (samples are seconds)."""
    if not samples:
        return {"count": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    a = np.asarray(samples) * 1000
    return {
        "count": len(a),
        "p50_ms": round(float(np.percentile(a, 50)), 1),
        "p95_ms": round(float(np.percentile(a, 95)), 1),
        "p99_ms": round(float(np.percentile(a, 99)), 1),
        "max_ms": round(float(a.max()), 1),
    }


def fmt_row(name: str, s: dict[str, float | int | None]) -> str:
    if not s["count"]:
        return f"{name:18s} (no samples)"
    return (f"{name:18s} n={s['count']:<4d} p50 {s['p50_ms']:7.1f} ms  p95 {s['p95_ms']:7.1f} ms  "
            f"p99 {s['p99_ms']:7.1f} ms  max {s['max_ms']:7.1f} ms")
