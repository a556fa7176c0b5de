"""The shipped dashboard and Prometheus rules, run for real: promtool checks the rules, then
Debian's `prometheus` scrapes a live kombain server that took a little traffic, and every
dashboard expression and every rule expression is evaluated through the HTTP query API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
import yaml

from tests.conftest import ROOT, SPEECH_DIR, LiveServer, free_port, start_server, stop_server

DASHBOARD = ROOT / "deploy" / "grafana" / "kombain.json"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="Debian package `prometheus` (prometheus, promtool) is not installed",
)

# Expressions that are legitimately empty (or only NaN) after this test's traffic: one realtime
# WebSocket session with a completed turn, a barge-in, a bad event and a refused second call.
# Matched by metric name inside the expression, each with the reason nothing is there.
EMPTY_OK = {
    "kombain_rtp_packets_total": "no SIP call, so no RTP packet",
    "kombain_telephony_events_total": "no telephony call, so no refused telephony message",
    "kombain_webrtc_setup_seconds": "no WebRTC call",
    "kombain_webrtc_calls_ended_total": "no WebRTC call",
    "kombain_transcriptions_total": "the panel shows failed REST transcriptions; none failed",
    "kombain_speech_requests_total": "the panel shows failed REST speech requests; none failed",
    "kombain_turn_model_seconds": "server_vad sessions do not run the end-of-turn model",
    "kombain_lane_jobs_total": "no lane job ran (no image model, KOMBAIN_LANE_WORKERS=0)",
    "kombain_lane_step_seconds": "no lane job ran",
    "kombain_lane_pause_seconds": "no lane job ran",
}

# Stand-ins for Grafana's built-in variables; the dashboard's own variables become "all" (.*).
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1m"}


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"] for v in dash["templating"]["list"]}
    exprs = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            exprs.append(grafana_to_promql(target["expr"], variables))
    return exprs


def grafana_to_promql(expr: str, variables: set[str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name in GRAFANA_BUILTINS:
            return GRAFANA_BUILTINS[name]
        assert name in variables, f"unknown Grafana variable ${name} in {expr}"
        return ".*"

    out = re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, expr)
    assert "$" not in out, out
    return out


def rule_exprs() -> tuple[list[str], list[str]]:
    """(recording rule exprs, alert exprs) of deploy/prometheus/rules.yml."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    return [r["expr"] for r in rules if "record" in r], [r["expr"] for r in rules if "alert" in r]


def allowed_empty(expr: str) -> str | None:
    return next((why for name, why in EMPTY_OK.items() if name in expr), None)


@needs_prometheus
def test_promtool_accepts_the_rules_and_config() -> None:
    out = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    config = ROOT / "deploy" / "prometheus" / "prometheus.yml"
    out = subprocess.run(["promtool", "check", "config", "--syntax-only", str(config)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr


# --- live: a server, some traffic, a Prometheus scraping it -------------------------------------

@contextlib.contextmanager
def running_prometheus(tmp: Path, target_port: int) -> Iterator[str]:
    """Debian's prometheus on a free loopback port, scraping the target every second."""
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "kombain",
                            "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}],
    }))
    log = open(tmp / "prometheus.log", "wb")  # closed in the finally below
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (tmp / "prometheus.log").read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "prometheus not ready in 20 s"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def query(client: httpx.AsyncClient, expr: str) -> dict[str, Any]:
    r = await client.get("/api/v1/query", params={"query": expr})
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", (expr, body)
    return body["data"]


def finite(data: dict[str, Any]) -> bool:
    """Whether a query result holds at least one real number (histogram_quantile of no
    observations gives NaN series, which are not a measurement)."""
    if data["resultType"] == "scalar":
        return not math.isnan(float(data["result"][1]))
    return any(not math.isnan(float(s["value"][1])) for s in data["result"])


async def wait_for(client: httpx.AsyncClient, expr: str, ok: Any) -> None:
    """Poll until the first sample of `expr` satisfies `ok`; the caller bounds it in time."""
    while True:
        data = await query(client, expr)
        if data["result"] and ok(float(data["result"][0]["value"][1])):
            return
        await asyncio.sleep(0.25)


async def drive_traffic(server: LiveServer) -> None:
    """A turn answered by the echo responder, a bad event, a refused call, then a barge-in."""
    from tests.integration.helpers import clip_pcm16, open_session

    s = await open_session(server.ws_url)
    await s.append(clip_pcm16(SPEECH_DIR / "arctic_a0009.wav", 24000), 4800, speed=4.0, rate=24000)
    done = await s.wait_for("response.done", timeout=30)
    assert done[0]["response"]["status"] == "completed"

    await s.send({"type": "no.such.event"})  # -> kombain_client_errors_total
    await s.wait_for("error", timeout=10)

    # KOMBAIN_MAX_SESSIONS=1 and one session open: the next call is refused as "full".
    async with websockets.connect(server.ws_url + "/v1/realtime") as ws2:
        first = json.loads(await asyncio.wait_for(ws2.recv(), 10))
        assert first["type"] == "error" and first["error"]["code"] == "server_full", first

    say = ("This is a long answer that keeps going for a while, so that the caller has time "
           "to interrupt it before it ends. Nobody should hear the end of it.")
    await s.send({"type": "response.create", "response": {"instructions": say, "metadata": {"kombain_say": "true"}}})
    await s.wait_for("response.output_audio.delta", count=len(s.of("response.output_audio.delta")) + 8,
                     timeout=30)
    await s.append(clip_pcm16(SPEECH_DIR / "goforward.wav", 24000, silence_s=1.0), 960, speed=1.0, rate=24000)
    done = await s.wait_for("response.done", count=2, timeout=30)
    assert done[1]["response"]["status"] == "cancelled", done[1]["response"]
    await s.close()


@needs_prometheus
@pytest.mark.asyncio
async def test_dashboard_and_rules_evaluate_against_a_live_server(tmp_path: Path) -> None:
    started = time.monotonic()
    records, alerts = rule_exprs()
    panels = dashboard_exprs()
    server = await asyncio.to_thread(
        start_server, tmp_path / "server", {"KOMBAIN_LANE_WORKERS": "0", "KOMBAIN_MAX_SESSIONS": "1"}, 60)
    try:
        with running_prometheus(tmp_path / "prom", server.port) as prom_url:
            async with asyncio.timeout(75), httpx.AsyncClient(base_url=prom_url, timeout=5) as client:
                # A scrape before the traffic, so rate() sees the counters move.
                async with asyncio.timeout(15):
                    await wait_for(client, 'up{job="kombain"}', lambda v: v == 1)
                await drive_traffic(server)
                # Two scrapes after it: rate() needs two samples of series the traffic created.
                after = time.time() + 2.2
                async with asyncio.timeout(10):
                    await wait_for(client, 'timestamp(up{job="kombain"})', lambda v: v >= after)

                missing: list[str] = []
                for expr in dict.fromkeys(panels + records):
                    data = await query(client, expr)
                    why = allowed_empty(expr)
                    if why is None and not finite(data):
                        missing.append(expr)
                    if why is not None and finite(data):
                        missing.append(f"allow-listed as empty ({why}) but has data: {expr}")
                for expr in alerts:  # valid PromQL; whether they fire is not this test's business
                    await query(client, expr)
                assert not missing, "no data for:\n" + "\n".join(missing)
    finally:
        await asyncio.to_thread(stop_server, server)
    assert "Traceback" not in server.log(), server.log()[-5000:]
    assert time.monotonic() - started < 90


def test_every_metric_named_by_the_dashboard_and_rules_exists() -> None:
    """A typo in a metric name would only show up as an empty panel; catch it without Prometheus."""
    from kombain.server.metrics import Metrics

    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
    known = {"up"}
    for family in Metrics().registry.collect():
        known.update(family.name + s for s in suffixes[family.type])
    records, alerts = rule_exprs()
    recorded = {r["record"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "record" in r}
    for expr in dashboard_exprs() + records + alerts:
        for name in re.findall(r"\b(kombain_\w+|[a-z_]+:kombain_\w+:\w+)\b", expr):
            assert name in known or name in recorded, f"{name} in {expr}"
