"""Jobs survive: an embedded server restart, a Redis worker killed mid-job, a Redis outage;
and a flood of submissions is refused with 429."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import httpx
from conftest import BASE_ENV, job, start_server, start_worker, stop_server, wait_for, wait_status

VIDEO = {"prompt": "a bird", "size": "32x32", "num_frames": 4}


def _submit(url: str, steps: int, **extra: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/videos", json=VIDEO | {"num_inference_steps": steps} | extra, timeout=10)


def test_embedded_restart_keeps_jobs_and_429(tmp_path: Path, tiny_models: dict[str, str]) -> None:
    env = BASE_ENV | tiny_models | {"KOMBAIN_LANE_WORKERS": "0", "KOMBAIN_LANE_QUEUE_LIMIT": "3"}
    server = start_server(tmp_path, env)
    try:
        ids = [_submit(server.url, 3).json()["id"] for _ in range(3)]
        r = _submit(server.url, 3)
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "queue_full"
    finally:
        stop_server(server)
    # A new process on the same data dir, this time with a worker: the queued jobs run.
    server = start_server(tmp_path, env | {"KOMBAIN_LANE_WORKERS": "1"})
    try:
        for i in ids:
            assert wait_status(server.url, i, {"succeeded", "failed"})["status"] == "succeeded"
    finally:
        stop_server(server)


def test_embedded_running_job_requeued_after_server_dies(tmp_path: Path, tiny_models: dict[str, str]) -> None:
    env = BASE_ENV | tiny_models
    server = start_server(tmp_path, env)
    try:
        vid = _submit(server.url, 600).json()["id"]
        wait_for(lambda: job(server.url, vid), lambda j: j["step"] > 0 or j["status"] != "queued",
                 what="the job to start")
    finally:
        server.proc.send_signal(signal.SIGKILL)  # no graceful shutdown
        server.proc.wait()
    server = start_server(tmp_path, env)
    try:
        done = wait_status(server.url, vid, {"succeeded", "failed"}, timeout=150)
        assert done["status"] == "succeeded" and done["attempts"] >= 2, done
    finally:
        stop_server(server)


def test_redis_worker_killed_mid_job(tmp_path: Path, tiny_models: dict[str, str], redis_server: Any) -> None:
    env = BASE_ENV | tiny_models | {"KOMBAIN_QUEUE": redis_server.url, "KOMBAIN_LANE_WORKERS": "0",
                                    "KOMBAIN_LANE_RECLAIM_IDLE_S": "2"}
    server = start_server(tmp_path, env)
    workers = {w: start_worker(tmp_path, env, w) for w in ("wa", "wb")}
    try:
        vid = _submit(server.url, 300).json()["id"]
        first = wait_for(lambda: job(server.url, vid), lambda j: j["step"] > 0, what="a worker to start")
        workers[first["worker"]].send_signal(signal.SIGKILL)
        done = wait_status(server.url, vid, {"succeeded", "failed"}, timeout=150)
        assert done["status"] == "succeeded", done
        assert done["worker"] != first["worker"] and done["attempts"] == 2
        assert httpx.get(f"{server.url}/v1/videos/{vid}/content").content[4:8] == b"ftyp"
    finally:
        for p in workers.values():
            p.kill()
            p.wait()
        stop_server(server)


def test_redis_outage_loses_no_job(tmp_path: Path, tiny_models: dict[str, str], redis_server: Any) -> None:
    env = BASE_ENV | tiny_models | {"KOMBAIN_QUEUE": redis_server.url, "KOMBAIN_LANE_WORKERS": "1"}
    server = start_server(tmp_path, env)
    try:
        running = _submit(server.url, 200).json()["id"]
        queued = [_submit(server.url, 3, priority=p).json()["id"] for p in ("low", "high")]
        wait_for(lambda: job(server.url, running), lambda j: j["step"] > 0, what="the job to start")
        redis_server.stop(signal.SIGKILL)
        r = _submit(server.url, 3)
        assert r.status_code == 503 and r.json()["error"]["code"] == "queue_unavailable"
        time.sleep(1.0)
        redis_server.start()
        for i in [running, *queued]:
            assert wait_status(server.url, i, {"succeeded", "failed", "cancelled"}, 150)["status"] == "succeeded"
    finally:
        stop_server(server)
