"""The installed distribution is `kombain.*` only: nothing generic lands in site-packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT


def test_wheel_installs_only_the_kombain_namespace(tmp_path: Path) -> None:
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(ROOT)], check=True, timeout=300, cwd=tmp_path,
                           capture_output=True, text=True)
    # Set-up prints no warnings: a deprecated license table, a data folder missing from the packages.
    assert "Warning" not in build.stdout + build.stderr, build.stdout + build.stderr
    wheel = next(tmp_path.glob("kombain-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"kombain", next(t for t in tops if t.endswith(".dist-info"))}, tops
    for pkg in ("server", "streaming", "clients", "loadtest"):
        assert f"kombain/{pkg}/__init__.py" in names
    assert "kombain/server/transports/twilio/connection.py" in names
    assert "kombain/clients/web/index.html" in names  # the call page ships with the package
    assert "kombain/clients/web/favicon.svg" in names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata  # the SPDX form (a TOML table is deprecated)
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "kombain = kombain.server.cli:main" in entry
