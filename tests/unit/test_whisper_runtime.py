"""streaming.whisper_runtime.pick_device: compute type chosen for an explicit device."""

from __future__ import annotations

import pytest

from kombain.streaming.whisper_runtime import pick_device


@pytest.mark.parametrize(
    ("device", "compute", "expected"),
    [
        ("cpu", "auto", ("cpu", "int8")),
        ("cuda", "auto", ("cuda", "float16")),
        ("cpu", "float32", ("cpu", "float32")),
        ("cuda", "int8_float16", ("cuda", "int8_float16")),
    ],
)
def test_pick_device(device: str, compute: str, expected: tuple[str, str]) -> None:
    assert pick_device(device, compute) == expected


def test_pick_device_auto_resolves_to_a_concrete_device() -> None:
    device, compute = pick_device("auto", "auto")
    assert (device, compute) in {("cpu", "int8"), ("cuda", "float16")}


def test_decode_workers_default_to_one_single_threaded_decode_per_core() -> None:
    from kombain.streaming.whisper_runtime import decode_workers

    assert decode_workers("cpu", 0, 0, 2) == (2, 1)
    assert decode_workers("cpu", 0, 0, 16) == (4, 4)
    assert decode_workers("cpu", 0, 0, 1) == (1, 1)
    assert decode_workers("cuda", 0, 0, 16) == (1, 16)
    assert decode_workers("cpu", 1, 0, 2) == (1, 2)  # the old layout: one worker on every core
    assert decode_workers("cpu", 3, 2, 2) == (3, 2)  # explicit settings are kept


def test_batch_limits_default_to_four_finals_and_two_partials_on_a_cpu() -> None:
    from kombain.streaming.whisper_runtime import batch_limits

    assert batch_limits("cpu", 0) == (4, 2, 2)
    assert batch_limits("cuda", 0) == (16, 16, 16)
    assert batch_limits("cpu", 1) == (1, 1, 1)  # batching off
    assert batch_limits("cpu", 8) == (8, 2, 2)
