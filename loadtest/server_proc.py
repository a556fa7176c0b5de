"""Start a kombain server for a benchmark and sample its CPU and memory."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def local_server(env: dict[str, str] | None = None, log_path: Path | None = None) -> Iterator[tuple[str, int]]:
    """Run `kombain serve` on a free loopback port; yields (url, pid)."""
    port = free_port()
    # Side listeners on free ports too, so a load test never collides with a running server.
    full_env = {"KOMBAIN_AUDIOSOCKET_LISTEN": f"127.0.0.1:{free_port()}", "KOMBAIN_SIP_LISTEN": f"127.0.0.1:{free_port()}",
                "KOMBAIN_WYOMING_LISTEN": f"127.0.0.1:{free_port()}",
                **os.environ, **(env or {})}
    log = open(log_path or os.devnull, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "kombain.server.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--log-level", "warning"], env=full_env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("server exited during start-up")
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            raise RuntimeError("server did not become ready")
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


class ResourceSampler:
    """Samples a process's CPU (% of one core) and RSS every `interval` seconds while running."""

    def __init__(self, pid: int | None, interval: float = 0.5) -> None:
        self.proc = psutil.Process(pid) if pid else None
        self.interval = interval
        self.cpu: list[float] = []
        self.rss_mb: list[float] = []

    async def run(self) -> None:
        if self.proc is None:
            return
        self.proc.cpu_percent(None)
        while True:
            await asyncio.sleep(self.interval)
            try:
                with self.proc.oneshot():
                    self.cpu.append(self.proc.cpu_percent(None))
                    self.rss_mb.append(self.proc.memory_info().rss / 2**20)
            except psutil.Error:
                return

    def summary(self) -> dict[str, float | None]:
        if not self.cpu:
            return {"cpu_mean_pct": None, "cpu_max_pct": None, "rss_max_mb": None}
        return {"cpu_mean_pct": round(sum(self.cpu) / len(self.cpu), 1), "cpu_max_pct": round(max(self.cpu), 1),
                "rss_max_mb": round(max(self.rss_mb), 1)}
