"""Lane fixtures: tiny pipelines on disk, a real redis-server, servers and workers as subprocesses."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest


def _root_conftest() -> Any:
    """tests/conftest.py (start_server, free_port), loaded by path: its module name is taken."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "conftest.py"
    spec = importlib.util.spec_from_file_location("kombain_tests_root", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["kombain_tests_root"] = mod
    spec.loader.exec_module(mod)
    return mod


_root = _root_conftest()
ROOT, free_port, start_server, stop_server = (
    _root.ROOT, _root.free_port, _root.start_server, _root.stop_server
)

# The lane tests need no speech models; skipping them keeps each server start short.
BASE_ENV = {
    "KOMBAIN_COMPONENTS_DISABLED": "speech-to-text",
    "KOMBAIN_LANE_MAX_STEPS": "5000",
    "KOMBAIN_LANE_DEFAULT_STEPS": "4",
    "KOMBAIN_LANE_NICE": "0",
    "KOMBAIN_LOG_LEVEL": "info",
}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """{"KOMBAIN_IMAGE_MODEL": dir, "KOMBAIN_VIDEO_MODEL": dir}."""
    from kombain.loadtest.tiny_pipelines import build_image_pipeline, build_video_pipeline

    folder = tmp_path_factory.mktemp("models")
    return {
        "KOMBAIN_IMAGE_MODEL": str(build_image_pipeline(folder / "img")),
        "KOMBAIN_VIDEO_MODEL": str(build_video_pipeline(folder / "vid")),
    }


class RedisServer:
    """A real redis-server on 127.0.0.1, with an append-only file so a restart loses nothing."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no"],
            stdout=open(self.folder / "redis.log", "ab"), stderr=subprocess.STDOUT,
        )
        import redis

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=1).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def start_worker(tmp: Path, env_extra: dict[str, str], worker_id: str) -> subprocess.Popen[bytes]:
    """`kombain worker` as a separate process, as on another host."""
    env = dict(os.environ) | BASE_ENV | {"KOMBAIN_DATA_DIR": str(tmp / f"worker-{worker_id}"),
                                         "PYTHONUNBUFFERED": "1"} | env_extra
    log = open(tmp / f"worker-{worker_id}.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "kombain.server.cli", "worker", "--worker-id", worker_id],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for(fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 90,
              what: str = "condition") -> Any:
    """Poll `fetch()` until `done(value)`; a bounded wait, not a timing assertion."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = fetch()
        if done(value):
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last value: {value!r}")


def job(url: str, job_id: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def wait_status(url: str, job_id: str, statuses: set[str], timeout: float = 90) -> dict[str, Any]:
    return wait_for(lambda: job(url, job_id), lambda j: j["status"] in statuses, timeout,
                    f"job {job_id} to be {statuses}")
