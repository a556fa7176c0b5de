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
