"""The reduced scale-out run (`python -m kombain.loadtest scaleout --quick`): HAProxy in front of two
voice nodes, Redis and two lane workers, each in its own network namespace.

Asserts what an operator relies on: a drained node finishes its live calls and takes no new
ones; kill -9 loses only the calls on the killed node; a lane job survives its worker's death.
Skipped only where haproxy, redis-server or network namespaces are missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kombain.loadtest import netns
from tests.conftest import ROOT


def _missing() -> str | None:
    for tool in ("haproxy", "redis-server"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return netns.permitted()


def test_scaleout_drain_kill9_and_worker_loss(tmp_path: Path) -> None:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "kombain.loadtest", "scaleout", "--quick", "--out", str(out),
                           "--work", str(tmp_path / "work")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    print(output)  # shown with -s or on failure
    reports = list(out.glob("scaleout-*.json"))
    assert reports, output[-8000:]
    runs = {s["scenario"]: s for s in json.loads(reports[0].read_text())["scenarios"]}

    drain = runs["drain"]
    assert drain["live_on_node_at_signal"] >= 1, drain
    assert drain["of_those_completed"] == drain["live_on_node_at_signal"], drain
    assert drain["dropped"] == 0 and drain["failed"] == 0, drain
    assert drain["new_calls_served_by_node_after"] == 0 and drain["exit_code"] == 0, drain

    kill9 = runs["kill9"]
    assert kill9["live_on_node_at_kill"] >= 1, kill9
    assert kill9["lost_on_other_nodes"] == 0 and kill9["failed"] == 0, kill9
    assert kill9["dropped"] <= kill9["live_on_node_at_kill"], kill9
    assert kill9["new_calls_served_by_node_after"] == 0, kill9
    assert kill9["balancer_down_after_s"] < 5, kill9

    worker = runs["worker"]
    assert worker["jobs_submitted"] == 1 and worker["jobs_lost"] == 0, worker
    assert worker["finished_by"] != worker["killed"] and worker["video_ok"], worker
    assert worker["dropped"] == 0 and worker["failed"] == 0, worker
    assert proc.returncode == 0, output[-8000:]
