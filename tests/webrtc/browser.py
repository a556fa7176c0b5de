"""Headless Chromium driven over the DevTools protocol (the `websockets` library, no playwright)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import websockets

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--allow-loopback-in-peer-connection", "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required",
    "--remote-debugging-port=0", "--window-size=900,760",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


class Browser:
    """One Chromium process and one page target; `evaluate` runs JS and returns its value."""

    def __init__(self, proc: subprocess.Popen[bytes], ws: websockets.ClientConnection) -> None:
        self.proc, self.ws = proc, ws
        self._ids = itertools.count(1)

    @classmethod
    async def launch(cls, binary: str, profile: Path, audio_wav: Path | str, log: Path,
                     flags: list[str] | None = None) -> Browser:
        """`audio_wav` is the fake microphone (`FILE%noloop` plays it once); `flags` replace CHROMIUM_FLAGS."""
        args = [binary, *(CHROMIUM_FLAGS if flags is None else flags), f"--user-data-dir={profile}",
                f"--use-file-for-fake-audio-capture={audio_wav}", "about:blank"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=out)
        try:
            endpoint = await _devtools_endpoint(log, proc)
            page = await _page_ws_url(endpoint)
            ws = await websockets.connect(page, max_size=2**26)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        return cls(proc, ws)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        await self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:  # events interleave with replies; this driver only needs replies
            reply = json.loads(await self.ws.recv())
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    async def evaluate(self, expression: str, *, gesture: bool = False) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, awaitPromise=True,
                                 returnByValue=True, userGesture=gesture)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JS error: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def _devtools_endpoint(log: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> str:
    async with asyncio.timeout(timeout):
        while True:
            m = re.search(r"DevTools listening on (ws://\S+)", log.read_text(errors="replace"))
            if m:
                return m.group(1)
            if proc.poll() is not None:
                raise RuntimeError(f"chromium exited ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
            await asyncio.sleep(0.1)


async def _page_ws_url(browser_ws: str) -> str:
    async with websockets.connect(browser_ws, max_size=2**24) as ws:
        await ws.send(json.dumps({"id": 1, "method": "Target.getTargets"}))
        while True:
            reply = json.loads(await ws.recv())
            if reply.get("id") == 1:
                break
    page = next(t for t in reply["result"]["targetInfos"] if t["type"] == "page")
    host = browser_ws.split("/devtools/")[0]
    return f"{host}/devtools/page/{page['targetId']}"
