"""Start-up of the process's shared services (models, pools, lanes), in the app's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from kombain.server.services import SpeechToText
from kombain.server.state import AppState
from kombain.server.transports.spec import Starter, TransportSpec

log = logging.getLogger("kombain.components")


async def start_all(state: AppState, stack: contextlib.AsyncExitStack,
                    transports: tuple[TransportSpec, ...] = ()) -> None:
    """Load every shared service, then start the transports and the lane, then mark the app ready.
    Failures show on /readyz."""
    starters: list[tuple[str, Starter]] = [*_MODELS]
    starters += [(t.name, t.start) for t in transports if t.start is not None]
    starters.append(("lane", _start_lane))
    try:
        for name, starter in starters:
            if name in state.settings.disabled_components:
                log.info("skipping %s (disabled)", name)
                continue
            log.info("starting %s", name)
            await starter(state, stack)
        state.mark_ready()
        log.info("ready")
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("start-up failed")
        state.load_error = f"{type(exc).__name__}: {exc}"


async def _start_stt(state: AppState, stack: contextlib.AsyncExitStack) -> None:
    from kombain.streaming.stt_engine import load_engine
    from kombain.streaming.vad import SileroVadModel

    s = state.settings
    vad_model = await asyncio.to_thread(SileroVadModel.load)
    runtime = await asyncio.to_thread(  # EngineLoadError (names KOMBAIN_STT_MODEL): not ready
        load_engine,
        s.stt_model,
        data_dir=s.data_dir,
        device=s.stt_device,
        compute_type=s.stt_compute_type,
        threads=s.stt_threads,
        workers=s.stt_workers,
        batch=s.stt_batch,
        queue_size=s.stt_queue_size,
        on_queue_depth=state.metrics.stt_queue_depth.set,
        on_inference=lambda kind, sec: state.metrics.stt_inference_seconds.labels(kind).observe(sec),
        on_dropped=state.metrics.stt_dropped.inc,
        on_batch=lambda kind, n: state.metrics.stt_batch_size.labels(kind).observe(n),
    )
    stack.push_async_callback(runtime.aclose)
    from kombain.server.responders import load_script

    if s.turn_detection not in ("server_vad", "semantic_vad"):
        raise ValueError(f"KOMBAIN_TURN_DETECTION must be server_vad or semantic_vad, not {s.turn_detection!r}")
    if s.turn_eagerness not in ("low", "medium", "high", "auto"):
        raise ValueError(f"KOMBAIN_TURN_EAGERNESS must be low, medium, high or auto, not {s.turn_eagerness!r}")
    state.services.ivr_script = load_script(s)
    predictor = await _load_turn_model(state)
    if predictor is not None:
        stack.callback(predictor.close)
    state.services.stt = SpeechToText(whisper=runtime, vad=vad_model, turn_model=predictor)
    from kombain.server.file_models import FileModels

    file_models = FileModels(s, runtime)  # translation and diarization models, loaded on first use
    stack.push_async_callback(file_models.aclose)
    state.services.file_models = file_models


async def _load_turn_model(state: AppState):  # type: ignore[no-untyped-def]
    """Smart Turn for semantic_vad; a node without it still serves (semantic_vad -> server_vad)."""
    from kombain.streaming.end_of_turn import TurnPredictor
    from kombain.streaming.smart_turn import SmartTurnModel

    if not state.settings.turn_model:
        return None
    try:
        path = None if state.settings.turn_model == "smart-turn-v3.2" else Path(state.settings.turn_model)
        model = await asyncio.to_thread(SmartTurnModel.load, path, threads=1)
    except Exception as exc:
        log.warning("end-of-turn model not loaded (%s); semantic_vad sessions will use server_vad", exc)
        state.metrics.turn_model_load_failures.inc()
        return None
    return TurnPredictor(model, workers=state.settings.turn_model_workers,
                         on_inference=state.metrics.turn_model_seconds.observe)


async def _start_tts(state: AppState, stack: contextlib.AsyncExitStack) -> None:
    from kombain.streaming.tts import VoicePool
    from kombain.streaming.tts_cache import CacheConfig, SpeechCache

    s, m = state.settings, state.metrics
    store = None
    if s.tts_cache_redis:
        from kombain.server.tts_store import RedisSpeechStore

        store = RedisSpeechStore(s.tts_cache_redis, ttl_s=s.tts_cache_ttl_s,
                                 on_error=m.tts_cache_store_errors_total.inc)

    def lookup(outcome: str) -> None:
        if outcome == "miss":
            m.tts_cache_misses_total.inc()
        else:
            m.tts_cache_hits_total.labels(outcome).inc()

    cache = SpeechCache(CacheConfig(max_bytes=int(s.tts_cache_mb * 1024 * 1024), max_chars=s.tts_cache_max_chars),
                        store=store, on_lookup=lookup, on_size=m.tts_cache_bytes.set)
    pool = await asyncio.to_thread(
        VoicePool.load,
        s.tts_voice,
        s.tts_voices_dir or None,
        workers=s.tts_threads,
        on_first_audio=m.tts_first_audio_seconds.observe,
        on_queue_depth=m.tts_queue_depth.set,
        cache=cache,
    )
    stack.push_async_callback(asyncio.to_thread, pool.close)
    state.services.tts = pool

async def _start_lane(state: AppState, stack: contextlib.AsyncExitStack) -> None:
    # The lane module imports no torch: generation runs in worker subprocesses.
    from kombain.server.lane.gate import measure_pressure
    from kombain.server.lane.service import LaneService

    def voice_pressure(now: float) -> dict[str, Any]:
        stt = state.services.stt
        return measure_pressure((stt.whisper if stt else None, state.services.tts), state.host, now)

    lane = await asyncio.to_thread(LaneService, state.settings, state.metrics, voice_pressure)
    await lane.start()
    stack.push_async_callback(lane.aclose)
    state.services.lane = lane


# Order matters: voice first (the models, then the transports), so a node can serve calls before
# optional lanes come up. Speech synthesis needs nothing else, so it comes up first and
# /v1/audio/speech serves early.
_MODELS: list[tuple[str, Starter]] = [
    ("text-to-speech", _start_tts),
    ("speech-to-text", _start_stt),
]
