"""Keep the image/video lane saturated during a voice load test (`--lane saturated`)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

# Wide enough that a job runs for seconds on one core; the worker's defaults (1 thread, nice 10)
# are what a shared voice host runs.
_CHANNELS = (64, 128)
_SIZE = "256x256"
_STEPS = 150


@contextmanager
def lane_env() -> Iterator[dict[str, str]]:
    """Server environment with a local image pipeline built for the run."""
    from kombain.loadtest.tiny_pipelines import build_image_pipeline

    with tempfile.TemporaryDirectory(prefix="kombain-lane-") as tmp:
        model = build_image_pipeline(Path(tmp), channels=_CHANNELS)
        yield {"KOMBAIN_IMAGE_MODEL": str(model), "KOMBAIN_LANE_MAX_STEPS": str(_STEPS)}


async def saturate(url: str, outstanding: int = 2) -> None:
    """Keep `outstanding` image requests in flight (one running, the rest queued) until cancelled."""
    async with httpx.AsyncClient(timeout=600) as client:

        async def loop() -> None:
            while True:
                r = await client.post(url + "/v1/images/generations", json={
                    "prompt": "a lighthouse at dusk", "size": _SIZE, "num_inference_steps": _STEPS,
                    "response_format": "url"})
                if r.status_code >= 500:
                    await asyncio.sleep(1)

        async with asyncio.TaskGroup() as tg:
            for _ in range(outstanding):
                tg.create_task(loop())
