"""Run the SIP harness self-check and tests/sip/inner in a fresh network namespace (`unshare -n`)
with only loopback: sipp, baresip and the server's RTP never touch the host's network. Skipped only
where namespaces are not permitted or the peers (sipp, baresip) are not installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.webrtc.test_in_netns import _unshare_permitted


def test_sip_in_network_namespace() -> None:
    reason = _unshare_permitted()
    if reason:
        pytest.skip(reason)
    missing = [p for p in ("sipp", "baresip", "ip") if shutil.which(p) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (CI installs sip-tester, baresip, iproute2)")
    env = dict(os.environ, KOMBAIN_NETNS_INNER="1", PYTHONUNBUFFERED="1")
    script = (f"ip link set lo up && exec {sys.executable} -m pytest -q -p no:cacheprovider "
              "-o addopts='' tests/sip/test_harness_selfcheck.py tests/sip/inner")
    proc = subprocess.run(["unshare", "-n", "sh", "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    output = proc.stdout + proc.stderr
    print(output)  # shown with -s or on failure
    assert proc.returncode == 0, output[-8000:]
    assert " passed" in output, output[-3000:]
