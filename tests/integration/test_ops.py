"""Health, readiness, metrics, the CLI client, and no torch on the voice path."""

from __future__ import annotations

import subprocess
import sys

import httpx

from tests.conftest import ROOT, SPEECH_DIR


def test_health_ready_metrics(live_server):
    assert httpx.get(live_server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(live_server.url + "/readyz")
    assert ready.status_code == 200 and "tiny.en" in ready.json()["models"]
    metrics = httpx.get(live_server.url + "/metrics").text
    for name in ("kombain_sessions_active", "kombain_stt_queue_depth", "kombain_stt_final_seconds_bucket",
                 "kombain_partial_lag_seconds_bucket", "kombain_stt_inference_seconds_bucket",
                 "kombain_stt_batch_size_bucket", "kombain_stt_partials_late_total"):
        assert name in metrics, name
    assert httpx.get(live_server.url + "/openapi.json").json()["info"]["title"] == "kombain"


def test_cli_transcribe_streams_and_prints_final(live_server):
    out = subprocess.run([sys.executable, "-m", "kombain.server.cli", "transcribe", str(SPEECH_DIR / "goforward.wav"),
                          "--url", live_server.url, "--speed", "4"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "FINAL" in out.stdout and "forward" in out.stdout.lower()


def test_voice_path_imports_no_torch():
    code = ("import sys, server.app, server.components, server.transports.openai_realtime.connection, server.transcriptions, "
            "streaming.transcriber, streaming.whisper_runtime, streaming.vad; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
