"""One Wyoming transcription (`transcribe`, `audio-start`, `audio-chunk`..., `audio-stop`) on a
transcription-only call: the shared VAD, streaming transcriber and batched Whisper runtime.

Words stream as `transcript-chunk` events while the audio arrives (the words two successive
decodes agree on), then `transcript` with the whole text, then `transcript-stop`. The call
ends turns at the node's VAD silence (`KOMBAIN_VAD_SILENCE_MS`), so a speaker's pause followed by
the client's trailing silence is decoded before `audio-stop` arrives; audio-stop commits the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from kombain.server.host import CallHost
from kombain.server.transports.wyoming.protocol import encode
from kombain.streaming.call import Call, CallError, CallEvent
from kombain.streaming.stt_events import (
    CommittedEvent,
    TranscriptCompletedEvent,
    TranscriptDeltaEvent,
    TranscriptFailedEvent,
)

log = logging.getLogger("kombain.wyoming")
_FINALS_TIMEOUT_S = 60.0  # the last decodes after audio-stop (normally milliseconds)
_PROMPT_CHARS = 600  # Whisper reads at most 224 prompt tokens; names past that are dropped


def _key(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


class Transcription:
    """Open with `start` (inside the request's exit stack), feed `push`, end with `finish`."""

    def __init__(self, host: CallHost, send: Callable[[bytes], None], language: str | None,
                 end: Callable[[str], None], call_id: str, prompt: str | None = None) -> None:
        self.host, self._send, self.language, self.prompt = host, send, language, prompt
        self._end, self._call_id = end, call_id
        self.call: Call | None = None
        self._task: asyncio.Task[None] | None = None
        self._shown: dict[str, list[str]] = {}  # per turn: the words already sent as chunks
        self._held: dict[str, list[str]] = {}  # per turn: the newest stable word, not sent yet
        self._pending: set[str] = set()  # turns committed, final not yet in
        self._finals: list[str] = []
        self._failed: str | None = None
        self._settled = asyncio.Event()
        self._started = False  # transcript-start sent
        self._sent = ""  # every chunk's text so far
        self.result_language = language or "en"

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        config = replace(self.host.default_config(conversation=False), language=self.language, prompt=self.prompt)
        self.call = call = await stack.enter_async_context(
            self.host.open_call("wyoming", config, self._on_event, end=self._end, call_id=self._call_id))
        self._task = asyncio.create_task(call.run())
        stack.push_async_callback(self._stop)
        async with asyncio.timeout(5):
            await call.started.wait()

    async def push(self, samples: np.ndarray, rate: int) -> None:
        assert self.call is not None
        await self.call.receive_audio(samples, rate)

    async def finish(self) -> tuple[str, str | None]:
        """Commit what is left, wait for every turn's final; (the whole transcript, an error or None)."""
        call = self.call
        assert call is not None
        if call.transcriber.speaking:
            with contextlib.suppress(CallError):
                call.commit()
        if self._pending:
            self._settled.clear()
            async with asyncio.timeout(_FINALS_TIMEOUT_S):
                while self._pending:
                    await self._settled.wait()
                    self._settled.clear()
        return " ".join(t for t in self._finals if t), self._failed

    async def _stop(self) -> None:
        if self.call is not None:
            self.call.close()
        if self._task is not None:
            try:
                async with asyncio.timeout(5):
                    await self._task
            except TimeoutError:
                self._task.cancel()
            except Exception:
                log.warning("transcription call failed", exc_info=True)

    # --- the call's events --------------------------------------------------------------------

    def _on_event(self, ev: CallEvent) -> None:
        if isinstance(ev, TranscriptDeltaEvent):
            # The newest word waits for the next: its punctuation may still change ("across." in a
            # partial, "across the table." in the next), and a sent chunk cannot be taken back.
            words = self._held.pop(ev.item_id, []) + ev.delta.split()
            if len(words) > 1:
                self._shown.setdefault(ev.item_id, []).extend(words[:-1])
                self._chunk(" ".join(words[:-1]))
            self._held[ev.item_id] = words[-1:]
        elif isinstance(ev, CommittedEvent):
            self._pending.add(ev.item_id)
        elif isinstance(ev, TranscriptCompletedEvent):
            self.result_language = ev.language or self.result_language
            self._complete(ev.item_id, ev.transcript.strip())
        elif isinstance(ev, TranscriptFailedEvent):
            self._failed = ev.message
            self._complete(ev.item_id, "")

    def _complete(self, item_id: str, text: str) -> None:
        self._pending.discard(item_id)
        self._settled.set()
        if not text:
            return
        self._finals.append(text)
        self._held.pop(item_id, None)
        shown = self._shown.pop(item_id, [])
        words = text.split()
        if [_key(w) for w in words[:len(shown)]] == [_key(w) for w in shown]:
            rest = " ".join(words[len(shown):])
            if rest:
                self._chunk(rest)
        # else: the final disagrees with words already streamed; `transcript` carries the final text

    def _chunk(self, text: str) -> None:
        text = text.strip()
        if not text:
            return
        self.begin()
        if self._sent:
            text = " " + text
        self._sent += text
        self._send(encode("transcript-chunk", {"text": text}))

    def begin(self) -> None:
        """Send transcript-start once (before the first chunk, or before the transcript)."""
        if not self._started:
            self._started = True
            self._send(encode("transcript-start", {"language": self.language or self.result_language}))


def transcript_events(text: str, language: str) -> bytes:
    """`transcript`, then `transcript-stop`: a client reading to either finds the whole text."""
    return encode("transcript", {"text": text, "language": language}) + encode("transcript-stop")


def bias_prompt(data: dict[str, Any]) -> str | None:
    """Whisper's initial prompt from a transcribe's `transcript_names` and `transcript_terms`
    (Home Assistant's device and area names): their spelling is then preferred. BadEvent if they
    are not lists of strings."""
    from kombain.server.transports.wyoming.protocol import BadEvent

    words: list[str] = []
    for key in ("transcript_names", "transcript_terms"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise BadEvent(f"'{key}' must be a list of strings", "bad_event")
        words += [v.strip()[:100] for v in value[:200] if v.strip()]
    prompt = ", ".join(dict.fromkeys(words))
    return prompt[:_PROMPT_CHARS] or None


def check_language(language: str | None, runtime: Any) -> str | None:
    """An error message if the model cannot take `language`, else None."""
    if language is None:
        return None
    from kombain.server.transports.wyoming.info import asr_languages

    base = language.replace("_", "-").split("-", 1)[0].lower()
    if base not in asr_languages(runtime):
        return f"language {language!r} is not served by the model {runtime.name!r}"
    return None
