"""Models only the file endpoints use, loaded on their first request rather than at start-up:
the multilingual Whisper that translates, and the speaker encoder that diarizes. Start-up time,
memory and the live voice path stay as they were on a node that never gets such a request."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from kombain.server.settings import Settings
from kombain.streaming.whisper_runtime import WhisperRuntime

log = logging.getLogger("kombain.file_models")

TRANSLATE_MODEL = "base"  # the bundled multilingual Whisper
T = TypeVar("T")


def _lower_priority() -> None:
    """Nice 10 for the calling thread (on Linux the nice value is per thread): file work then
    gets the CPU the calls leave over instead of an equal share of it."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 10)
    except (AttributeError, OSError):  # not Linux, or not allowed: run at normal priority
        pass


class FileModels:
    """Loads each model once, on first use, in a thread; later callers wait for the same load."""

    def __init__(self, settings: Settings, stt: WhisperRuntime) -> None:
        self._settings = settings
        self._stt = stt
        self._lock = asyncio.Lock()
        self._translator: WhisperRuntime | None = None
        self._encoder: Any = None
        # One low-priority thread for the diarizer's own work (VAD over the file, embeddings,
        # clustering): requests queue behind each other there rather than fight the calls for CPU.
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kombain-file-work",
                                              initializer=_lower_priority)

    async def in_background(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the low-priority file-work thread."""
        return await asyncio.get_running_loop().run_in_executor(self._background, functools.partial(fn, *args))

    async def translator(self) -> WhisperRuntime:
        """A multilingual runtime: the live one if it is multilingual, else `base` on one worker
        of one thread (a translation is a file job; the other cores stay with the calls)."""
        if self._stt.multilingual:
            return self._stt
        async with self._lock:
            if self._translator is None:
                s = self._settings
                log.info("loading Whisper %s for translations", TRANSLATE_MODEL)
                self._translator = await asyncio.to_thread(
                    WhisperRuntime.load, TRANSLATE_MODEL, data_dir=s.data_dir, device=s.stt_device,
                    compute_type=s.stt_compute_type, threads=1, workers=1, batch=1, queue_size=8)
            return self._translator

    async def speaker_encoder(self) -> Any:
        """The speaker encoder (streaming/speaker_encoder.py)."""
        async with self._lock:
            if self._encoder is None:
                from kombain.streaming.speaker_encoder import SpeakerEncoder

                log.info("loading the speaker encoder for diarization")
                self._encoder = await asyncio.to_thread(SpeakerEncoder.load, self._settings.data_dir)
            return self._encoder

    async def aclose(self) -> None:
        self._background.shutdown(wait=False, cancel_futures=True)
        if self._translator is not None:
            await self._translator.aclose()

    async def embed_voice(self, audio: np.ndarray) -> np.ndarray:
        """One voice embedding of 16 kHz float32 audio (the encoder loaded on first use; the
        model runs in a worker thread): live speaker labels of realtime sessions use it."""
        encoder = await self.speaker_encoder()
        return await asyncio.to_thread(encoder.embed_utterance, audio)  # type: ignore[no-any-return]
