"""Pure lane logic: state machine, request validation, model names, the voice gate."""

from __future__ import annotations

import pytest

from kombain.server.lane.gate import GatePolicy, measure_pressure, voice_busy, wait_for_voice
from kombain.server.lane.jobs import (
    InvalidTransition,
    Job,
    JobKind,
    JobStatus,
    LaneError,
    Limits,
    check_prompt,
    check_transition,
    image_params,
    parse_priority,
    parse_size,
    resolve_model,
    video_params,
)


def test_transitions() -> None:
    check_transition(JobStatus.QUEUED, JobStatus.RUNNING)
    check_transition(JobStatus.RUNNING, JobStatus.QUEUED)  # retry
    check_transition(JobStatus.QUEUED, JobStatus.CANCELLED)
    check_transition(JobStatus.RUNNING, JobStatus.SUCCEEDED)
    for done in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
        assert done.finished
        for new in JobStatus:
            with pytest.raises(InvalidTransition):
                check_transition(done, new)
    with pytest.raises(InvalidTransition):
        check_transition(JobStatus.QUEUED, JobStatus.SUCCEEDED)


@pytest.mark.parametrize("size,expected", [("512x512", (512, 512)), ("8x1024", (8, 1024)),
                                           ("32X64", (32, 64))])
def test_parse_size_ok(size: str, expected: tuple[int, int]) -> None:
    assert parse_size(size, 1024) == expected


@pytest.mark.parametrize("size", ["", "512", "512x", "x512", "500x512", "0x0", "1032x8", "-8x8",
                                  "8x8x8", 512, None, "abcxdef"])
def test_parse_size_bad(size: object) -> None:
    with pytest.raises(LaneError) as e:
        parse_size(size, 1024)
    assert e.value.status == 400 and e.value.code == "invalid_size"


def test_priority() -> None:
    assert parse_priority(None) == 1
    assert [parse_priority(p) for p in ("high", "normal", "low", 0, 2)] == [0, 1, 2, 0, 2]
    for bad in ("urgent", 3, -1, True, 1.5):
        with pytest.raises(LaneError):
            parse_priority(bad)


def test_prompt_bounds() -> None:
    limits = Limits(max_prompt_chars=10)
    assert check_prompt("a cat", limits) == "a cat"
    for bad in ("", "   ", None, 5, "x" * 11):
        with pytest.raises(LaneError):
            check_prompt(bad, limits)


def test_image_params() -> None:
    limits = Limits(max_images=4, max_steps=50, default_steps=7)
    p = image_params({"size": "64x32", "n": 2}, limits)
    assert (p["width"], p["height"], p["n"], p["num_inference_steps"]) == (64, 32, 2, 7)
    assert p["response_format"] == "b64_json"
    for bad in ({"n": 0}, {"n": 5}, {"n": "two"}, {"response_format": "jpeg"},
                {"num_inference_steps": 51}, {"seed": -1}):
        with pytest.raises(LaneError):
            image_params(bad, limits)


def test_video_params_frames_from_seconds() -> None:
    limits = Limits(max_frames=32, fps=8)
    p = video_params({"seconds": "2", "size": "32x32"}, limits)
    assert (p["seconds"], p["num_frames"], p["fps"]) == (2, 16, 8)
    assert video_params({"num_frames": 5}, limits)["num_frames"] == 5
    with pytest.raises(LaneError):
        video_params({"seconds": 5}, limits)  # 40 frames > 32
    with pytest.raises(LaneError):
        video_params({"num_frames": 33}, limits)


def test_resolve_model() -> None:
    assert resolve_model(None, JobKind.IMAGE, "/m/tiny-sd") == "tiny-sd"
    assert resolve_model("dall-e-3", JobKind.IMAGE, "/m/tiny-sd") == "tiny-sd"
    assert resolve_model("sora-2", JobKind.VIDEO, "/m/vid") == "vid"
    with pytest.raises(LaneError) as e:
        resolve_model("midjourney", JobKind.IMAGE, "/m/tiny-sd")
    assert e.value.status == 400 and e.value.code == "model_not_found"
    with pytest.raises(LaneError) as e:
        resolve_model(None, JobKind.VIDEO, "")
    assert e.value.status == 503 and "KOMBAIN_VIDEO_MODEL" in e.value.message


def test_job_roundtrip_and_views() -> None:
    job = Job(id="video_1", kind=JobKind.VIDEO, model="m", prompt="p",
              params={"width": 32, "height": 16, "seconds": 1}, steps=10, step=5,
              status=JobStatus.RUNNING)
    again = Job.from_row(job.to_row())
    assert again == job
    v = job.video_object(3600)
    assert (v["status"], v["progress"], v["size"]) == ("in_progress", 50, "32x16")
    assert job.public()["progress"] == 50


def test_measure_pressure_counts_queued_work_and_busy_calls() -> None:
    class W:
        pending = 3

    class Calls:
        def __init__(self, busy: int, count: int) -> None:
            self.busy, self.count = busy, count

    assert measure_pressure((None, None), Calls(0, 0), 1.0) == {"pending": 0, "sessions": 0, "ts": 1.0}
    assert measure_pressure((W(), None), Calls(0, 2), 2.0) == {"pending": 3, "sessions": 2, "ts": 2.0}
    assert measure_pressure((W(), W()), Calls(1, 2), 2.0)["pending"] == 7


def test_voice_busy() -> None:
    pol = GatePolicy(pending=1, sessions=0)
    assert voice_busy({"pending": 1, "sessions": 0, "ts": 100.0}, pol, 100.5)
    assert not voice_busy({"pending": 0, "sessions": 9, "ts": 100.0}, pol, 100.5)
    assert not voice_busy({"pending": 5, "sessions": 0, "ts": 100.0}, pol, 110.0)  # stale
    assert not voice_busy(None, pol, 1.0)
    assert not voice_busy({"pending": 5, "ts": 1.0}, GatePolicy(enabled=False), 1.0)
    assert voice_busy({"pending": 0, "sessions": 2, "ts": 1.0}, GatePolicy(pending=0, sessions=2), 1.0)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_gate_waits_until_voice_is_idle() -> None:
    clock = FakeClock()
    busy_until = 1000.5
    ticks = []

    def read() -> dict[str, float]:
        return {"pending": 1 if clock.t < busy_until else 0, "sessions": 0, "ts": clock.t}

    paused = wait_for_voice(read, GatePolicy(), clock, clock.sleep, tick=lambda: ticks.append(1))
    assert busy_until <= clock.t < busy_until + 0.05
    assert paused == pytest.approx(clock.t - 1000.0)
    assert ticks == []  # under a second: no heartbeat needed


def test_gate_pause_is_bounded() -> None:
    clock = FakeClock()
    ticks = []
    paused = wait_for_voice(lambda: {"pending": 9, "ts": clock.t}, GatePolicy(max_pause_s=3.0),
                            clock, clock.sleep, tick=lambda: ticks.append(1))
    assert 3.0 <= paused < 3.1
    assert len(ticks) in (2, 3)


def test_gate_does_not_pause_when_idle() -> None:
    clock = FakeClock()
    assert wait_for_voice(lambda: {"pending": 0, "ts": clock.t}, GatePolicy(), clock, clock.sleep) == 0
