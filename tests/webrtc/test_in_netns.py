"""Run tests/webrtc/inner in a fresh network namespace (`unshare -n`) that has only loopback.

No call can leak onto the host's network, and ICE has nothing to gather but 127.0.0.1, which is
what KOMBAIN_WEBRTC_HOSTS lets aioice use. Skipped only where namespaces are not permitted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _unshare_permitted() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"unshare -n is not permitted here: {probe.stderr.strip()}"
    return None


def test_webrtc_in_network_namespace() -> None:
    reason = _unshare_permitted()
    if reason:
        pytest.skip(reason)
    env = dict(os.environ, KOMBAIN_NETNS_INNER="1", PYTHONUNBUFFERED="1")
    script = (f"ip link set lo up && exec {sys.executable} -m pytest -q -p no:cacheprovider "
              "-o addopts='' tests/webrtc/inner")
    proc = subprocess.run(["unshare", "-n", "sh", "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    output = proc.stdout + proc.stderr
    print(output)  # shown with -s or on failure
    assert proc.returncode == 0, output[-8000:]
    assert " passed" in output
