"""The lane through its public HTTP API, embedded back end: a real server, its worker subprocess
and the tiny diffusers pipelines."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import BASE_ENV, job, start_server, stop_server, wait_for, wait_status


@pytest.fixture(scope="module")
def lane_server(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, str]) -> Iterator[Any]:
    server = start_server(tmp_path_factory.mktemp("lane"), BASE_ENV | tiny_models)
    yield server
    stop_server(server)
    assert "Traceback" not in server.log(), server.log()[-5000:]


def _error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"] and err["type"]


def test_image_b64_end_to_end(lane_server: Any) -> None:
    from PIL import Image

    r = httpx.post(f"{lane_server.url}/v1/images/generations",
                   json={"prompt": "a red cat", "n": 2, "size": "32x48"}, timeout=120)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert len(data) == 2
    img = Image.open(io.BytesIO(base64.b64decode(data[0]["b64_json"])))
    assert img.format == "PNG" and img.size == (32, 48)


def test_image_url_and_openai_sdk(lane_server: Any) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{lane_server.url}/v1", api_key="unused")
    resp = client.images.generate(prompt="the sea", model="dall-e-2", size="32x32",
                                  response_format="url")
    assert resp.data[0].url
    png = httpx.get(resp.data[0].url, timeout=10)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG")


def test_video_end_to_end_with_events(lane_server: Any) -> None:
    r = httpx.post(f"{lane_server.url}/v1/videos",
                   json={"prompt": "a dog runs", "size": "32x32", "seconds": "1",
                         "num_inference_steps": 6})
    assert r.status_code == 200, r.text
    video = r.json()
    assert video["object"] == "video" and video["status"] in ("queued", "in_progress")
    events: list[tuple[str, dict[str, Any]]] = []
    with httpx.stream("GET", f"{lane_server.url}/v1/jobs/{video['id']}/events", timeout=120) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in s.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    assert events[-1][0] == "done" and events[-1][1]["status"] == "succeeded"
    steps = [e["step"] for _, e in events]
    assert steps == sorted(steps)
    final = httpx.get(f"{lane_server.url}/v1/videos/{video['id']}").json()
    assert final["status"] == "completed" and final["progress"] == 100
    mp4 = httpx.get(f"{lane_server.url}/v1/videos/{video['id']}/content", timeout=10)
    assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4"
    assert mp4.content[4:8] == b"ftyp"


def test_video_form_body_and_idempotency(lane_server: Any) -> None:
    headers = {"Idempotency-Key": "same-request-1"}
    body = {"prompt": "rain", "size": "32x32", "seconds": "1", "num_inference_steps": "2"}
    a = httpx.post(f"{lane_server.url}/v1/videos", data=body, headers=headers)
    b = httpx.post(f"{lane_server.url}/v1/videos", data=body, headers=headers)
    assert a.status_code == b.status_code == 200, a.text
    assert a.json()["id"] == b.json()["id"]
    wait_status(lane_server.url, a.json()["id"], {"succeeded"})


def test_cancel_mid_run(lane_server: Any) -> None:
    r = httpx.post(f"{lane_server.url}/v1/videos",
                   json={"prompt": "slow", "size": "32x32", "seconds": 1, "num_inference_steps": 900})
    vid = r.json()["id"]
    running = wait_for(lambda: job(lane_server.url, vid),
                       lambda j: j["status"] != "queued" and (j["step"] > 0 or j["status"] != "running"),
                       what="the job to be running")
    assert running["status"] == "running", running
    r = httpx.delete(f"{lane_server.url}/v1/videos/{vid}")
    assert r.status_code == 200, r.text
    done = wait_status(lane_server.url, vid, {"cancelled", "succeeded", "failed"})
    assert done["status"] == "cancelled" and 0 < done["step"] < 900
    assert httpx.get(f"{lane_server.url}/v1/videos/{vid}").json()["status"] == "cancelled"
    _error(httpx.delete(f"{lane_server.url}/v1/videos/{vid}"), 409, "job_finished")
    _error(httpx.get(f"{lane_server.url}/v1/videos/{vid}/content"), 409, "not_ready")


@pytest.mark.parametrize("body,status,code", [
    ({"prompt": "x", "size": "33x32"}, 400, "invalid_size"),
    ({"prompt": "x", "size": "4096x4096"}, 400, "invalid_size"),
    ({"prompt": "x", "size": "big"}, 400, "invalid_size"),
    ({"prompt": "x", "n": 0}, 400, "invalid_n"),
    ({"prompt": "x", "n": 11}, 400, "invalid_n"),
    ({"prompt": ""}, 400, "invalid_prompt"),
    ({"n": 1}, 400, "invalid_prompt"),
    ({"prompt": "x" * 5000}, 400, "prompt_too_long"),
    ({"prompt": "x", "model": "imagen-9"}, 400, "model_not_found"),
    ({"prompt": "x", "response_format": "gif"}, 400, "invalid_response_format"),
])
def test_image_bad_input(lane_server: Any, body: dict[str, Any], status: int, code: str) -> None:
    _error(httpx.post(f"{lane_server.url}/v1/images/generations", json=body), status, code)


def test_other_bad_requests(lane_server: Any) -> None:
    url = lane_server.url
    _error(httpx.post(f"{url}/v1/images/generations", content=b"{nope",
                      headers={"content-type": "application/json"}), 400, "invalid_json")
    _error(httpx.post(f"{url}/v1/videos", json={"prompt": "x", "seconds": 60}), 400, "invalid_seconds")
    _error(httpx.post(f"{url}/v1/videos", json={"prompt": "x", "model": "veo"}), 400, "model_not_found")
    _error(httpx.get(f"{url}/v1/videos/video_nope"), 404, "not_found")
    _error(httpx.get(f"{url}/v1/videos/video_nope/content"), 404, "not_found")
    _error(httpx.delete(f"{url}/v1/videos/video_nope"), 404, "not_found")
    _error(httpx.get(f"{url}/v1/jobs/nope"), 404, "not_found")
    _error(httpx.get(f"{url}/v1/jobs/nope/events"), 404, "not_found")
    _error(httpx.post(f"{url}/v1/images/generations", content=b"x" * 300_000), 413, "body_too_large")


def test_metrics_exposed(lane_server: Any) -> None:
    wait_for(lambda: httpx.get(f"{lane_server.url}/metrics").text,
             lambda t: "kombain_lane_step_seconds_count" in t and "kombain_lane_jobs_total{" in t,
             what="lane metrics")
    text = httpx.get(f"{lane_server.url}/metrics").text
    for name in ("kombain_lane_queue_depth", "kombain_lane_jobs_running", "kombain_lane_pause_seconds"):
        assert name in text


def test_no_model_configured_is_503(tmp_path: Path) -> None:
    server = start_server(tmp_path, BASE_ENV | {"KOMBAIN_LANE_WORKERS": "0"})
    try:
        r = httpx.post(f"{server.url}/v1/images/generations", json={"prompt": "x"})
        _error(r, 503, "model_not_configured")
        assert "KOMBAIN_IMAGE_MODEL" in r.json()["error"]["message"]
        _error(httpx.post(f"{server.url}/v1/videos", json={"prompt": "x"}), 503, "model_not_configured")
    finally:
        stop_server(server)


def test_voice_path_does_not_import_torch() -> None:
    code = ("import sys; import server.app, server.components, server.lane.api, server.lane.service;"
            "from server.app import create_app; from server.settings import Settings;"
            "create_app(Settings());"
            "bad = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def _worker_children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"worker" in cmd and b"--parent-pid" in cmd and str(pid).encode() in cmd:
                out.append(int(entry.name))
    return out


def test_no_lane_model_no_worker_process(tmp_path: Path) -> None:
    server = start_server(tmp_path, BASE_ENV | {"KOMBAIN_LANE_WORKERS": "1"})  # and no model configured
    try:
        r = httpx.post(f"{server.url}/v1/images/generations", json={"prompt": "a cat"}, timeout=10)
        _error(r, 503, "model_not_configured")
        assert _worker_children(server.proc.pid) == []
        assert "not starting lane workers" in server.log()
    finally:
        stop_server(server)


def test_a_configured_lane_starts_its_worker(lane_server: Any) -> None:
    assert len(_worker_children(lane_server.proc.pid)) == 1
