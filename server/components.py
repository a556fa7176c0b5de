"""Start-up of the process's shared services (models, pools, lanes), in the app's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from server.app import AppState

log = logging.getLogger("kombain.components")


async def start_all(state: AppState, stack: contextlib.AsyncExitStack) -> None:
    """Load every shared service, then mark the app ready. Failures show on /readyz."""
    try:
        for name, starter in _STARTERS:
            if name in state.settings.disabled_components:
                log.info("skipping %s (disabled)", name)
                continue
            log.info("starting %s", name)
            await starter(state, stack)
        state.ready.set()
        log.info("ready")
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("start-up failed")
        state.load_error = f"{type(exc).__name__}: {exc}"


async def _start_stt(state: AppState, stack: contextlib.AsyncExitStack) -> None:
    from streaming.vad import SileroVadModel
    from streaming.whisper_runtime import WhisperRuntime

    s = state.settings
    vad_model = await asyncio.to_thread(SileroVadModel.load)
    runtime = await asyncio.to_thread(
        WhisperRuntime.load,
        s.stt_model,
        data_dir=s.data_dir,
        device=s.stt_device,
        compute_type=s.stt_compute_type,
        threads=s.stt_threads,
        queue_size=s.stt_queue_size,
        on_queue_depth=state.metrics.stt_queue_depth.set,
        on_inference=lambda kind, sec: state.metrics.stt_inference_seconds.labels(kind).observe(sec),
    )
    stack.push_async_callback(runtime.aclose)
    state.services["vad"] = vad_model
    state.services["whisper"] = runtime
    state.services.setdefault("model_names", []).append(runtime.name)


async def _start_lane(state: AppState, stack: contextlib.AsyncExitStack) -> None:
    # The lane module imports no torch: generation runs in worker subprocesses.
    from server.lane.service import LaneService

    lane = await asyncio.to_thread(LaneService, state.settings, state.metrics, state.services)
    await lane.start()
    stack.push_async_callback(lane.aclose)
    state.services["lane"] = lane


# Order matters: voice first, so a node can serve calls before optional lanes come up.
_STARTERS = [
    ("speech-to-text", _start_stt),
    ("lane", _start_lane),
]
