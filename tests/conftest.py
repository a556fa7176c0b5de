"""Shared fixtures: a real kombain server on 127.0.0.1, started once per test session."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
SPEECH_DIR = ROOT / "tests" / "data" / "speech"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    audiosocket_port: int = 0
    sip_port: int = 0
    wyoming_port: int = 0

    @property
    def ws_url(self) -> str:
        return self.url.replace("https://", "wss://").replace("http://", "ws://")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(tmp: Path, env_extra: dict[str, str] | None = None, timeout: float = 120,
                 https_ca: str | None = None) -> LiveServer:
    """Start `kombain serve` in a subprocess and wait until /readyz says ready.

    `https_ca`: the server serves TLS (KOMBAIN_SSL_* in env_extra); readiness is checked over
    https, verified against this CA file."""
    port = free_port()
    env = dict(os.environ)
    env.update({"KOMBAIN_DATA_DIR": str(tmp / "data"), "PYTHONUNBUFFERED": "1",
                # Listeners of their own, so servers started side by side do not collide.
                "KOMBAIN_AUDIOSOCKET_LISTEN": f"127.0.0.1:{free_port()}",
                "KOMBAIN_SIP_LISTEN": f"127.0.0.1:{free_port()}",
                "KOMBAIN_WYOMING_LISTEN": f"127.0.0.1:{free_port()}"})
    env.update(env_extra or {})
    as_port = int(env["KOMBAIN_AUDIOSOCKET_LISTEN"].rpartition(":")[2] or 0)
    sip_port = int(env["KOMBAIN_SIP_LISTEN"].rpartition(":")[2] or 0)
    wyoming_port = int(env["KOMBAIN_WYOMING_LISTEN"].rpartition(":")[2] or 0)
    tmp.mkdir(parents=True, exist_ok=True)
    log_path = tmp / f"server-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kombain.server.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    scheme = "https" if https_ca else "http"
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=https_ca) if https_ca else True
    server = LiveServer(f"{scheme}://127.0.0.1:{port}", port, proc, log_path, as_port, sip_port, wyoming_port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log()}")
        try:
            if httpx.get(server.url + "/readyz", timeout=2, verify=verify).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server not ready in {timeout}s:\n{server.log()}")


def stop_server(server: LiveServer) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server with the default settings (bundled tiny.en) for the whole test run."""
    server = start_server(tmp_path_factory.mktemp("server"))
    yield server
    stop_server(server)
    # A crash or traceback in the server during the tests is a failure even if every request passed.
    assert "Traceback" not in server.log(), server.log()[-5000:]


def speech_clips() -> list[tuple[Path, str]]:
    """(wav path, reference transcript) for the recorded speech in tests/data/speech."""
    rows = (SPEECH_DIR / "transcripts.tsv").read_text().strip().splitlines()[1:]
    return [(SPEECH_DIR / name, text) for name, text in (r.split("\t", 1) for r in rows)]
