"""The call host: the one place that opens a call, for every transport.

Admission (ready, not draining, under the session limit), the registry of live calls (the lane
gate and /readyz read it; every transport counts), metrics labelled by transport, the session
deadline, and drain on shutdown. A transport does::

    async with host.open_call("twilio", config, emit, output=port, end=on_end) as call:
        ...  # feed call.push_audio / push_dtmf; run call.run() in its TaskGroup

`end(reason)` is the transport's way to finish a call on the host's behalf (deadline, drain):
it tells its caller in its own protocol and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from kombain.server.metrics import Metrics
from kombain.server.responders import build_responder
from kombain.server.services import Services
from kombain.server.settings import Settings
from kombain.streaming.call import AudioOutput, Call, CallConfig, CallEvent, CallHooks
from kombain.streaming.endpointer import TurnDetection
from kombain.streaming.ingest import IngestPacer
from kombain.streaming.responders import Responder
from kombain.streaming.transcriber import SttConfig

log = logging.getLogger("kombain.host")
__all__ = ["CallHost", "CallRefused", "LiveCall"]


class CallRefused(Exception):
    """The node will not take a call now; `code` is `server_not_ready`, `server_draining` or `server_full`."""

    def __init__(self, message: str, code: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after_s = retry_after_s


@dataclass
class LiveCall:
    call: Call
    transport: str
    end: Callable[[str], None]
    opened_at: float = field(default_factory=time.monotonic)
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class CallHost:
    """Live calls on this node, whatever their transport."""

    def __init__(self, settings: Settings, metrics: Metrics, services: Services) -> None:
        self.settings, self.metrics, self._services = settings, metrics, services
        self._calls: dict[str, LiveCall] = {}
        self.draining = False
        self.ready = False

    # --- what others read ------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        return self.settings.max_sessions

    @property
    def count(self) -> int:
        return len(self._calls)

    @property
    def full(self) -> bool:
        return len(self._calls) >= self.settings.max_sessions

    @property
    def busy(self) -> int:
        """Calls in the middle of a turn or a spoken reply (voice pressure for the lane gate)."""
        return sum(1 for c in self._calls.values() if c.call.busy)

    def by_transport(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self._calls.values():
            out[c.transport] = out.get(c.transport, 0) + 1
        return out

    def get(self, call_id: str) -> LiveCall | None:
        return self._calls.get(call_id)

    # --- opening calls ---------------------------------------------------------------------------

    def admit(self, transport: str) -> None:
        """Raise CallRefused if a new call cannot be taken now (check before answering a peer)."""
        if self.draining:
            self._refused(transport, "draining")
            raise CallRefused("the server is shutting down; call another node", "server_draining", 5)
        if not self.ready:
            self._refused(transport, "not_ready")
            raise CallRefused("the server is not ready (loading models); retry shortly", "server_not_ready", 2)
        if self._services.stt is None:  # KOMBAIN_COMPONENTS_DISABLED=speech-to-text
            self._refused(transport, "not_ready")
            raise CallRefused("speech recognition is not running on this node", "server_not_ready", 5)
        if self.full:
            self._refused(transport, "full")
            raise CallRefused(f"server is at its session limit ({self.limit}); retry later", "server_full", 5)

    def default_config(self, *, conversation: bool = True) -> CallConfig:
        s = self.settings
        return CallConfig(conversation=conversation, turn_detection=default_turn_detection(s, conversation),
                          language=s.stt_language or None, interrupt_min_speech_ms=s.interrupt_min_speech_ms,
                          interrupt_min_words=s.interrupt_min_words)

    @contextlib.asynccontextmanager
    async def open_call(self, transport: str, config: CallConfig, emit: Callable[[CallEvent], None], *,
                        end: Callable[[str], None], output: AudioOutput | None = None,
                        responder: Responder | None = None, call_id: str | None = None,
                        ) -> AsyncIterator[Call]:
        """Admit and build a call, register it for its life, and end it at the session deadline."""
        self.admit(transport)
        call = self._build(transport, config, emit, output, responder, call_id)
        live = LiveCall(call, transport, end)
        self._calls[call.id] = live
        m = self.metrics
        m.sessions_total.labels(transport).inc()
        m.sessions_active.labels(transport).inc()
        log.info("call %s (%s) opened", call.id, transport)
        loop = asyncio.get_running_loop()
        deadline = loop.call_later(self.settings.max_session_seconds, self._expire, live)
        try:
            yield call
        finally:
            deadline.cancel()
            call.close()
            self._calls.pop(call.id, None)
            m.sessions_active.labels(transport).dec()
            live.ended.set()
            log.info("call %s (%s) closed after %.1f s", call.id, transport, time.monotonic() - live.opened_at)

    def _build(self, transport: str, config: CallConfig, emit: Callable[[CallEvent], None],
               output: AudioOutput | None, responder: Responder | None, call_id: str | None) -> Call:
        s, m, services = self.settings, self.metrics, self._services
        stt = services.stt
        assert stt is not None, "admit() refuses calls without speech recognition"
        tts = services.tts if config.conversation else None
        if tts is not None and responder is None:
            responder = build_responder(s, services.ivr_script)
        if tts is None:
            config = replace(config, conversation=False)
        hooks = CallHooks(
            vad_seconds=m.vad_seconds.observe,
            partial_lag=m.partial_lag_seconds.labels(transport).observe,
            stt_final=m.stt_final_seconds.labels(transport).observe,
            turn=m.turn_seconds.labels(transport).observe,
            barge_in=m.barge_in_seconds.labels(transport).observe,
            response=lambda status: m.responses_total.labels(transport, status).inc(),
            dtmf=m.dtmf_total.labels(transport).inc,
            turn_check=m.turn_check_probability.observe,
            semantic_fallback=m.semantic_vad_fallbacks.inc,
            partial_late=m.stt_partials_late.inc,
            audio_in=m.audio_in_seconds.labels(transport).inc,
            speculation=lambda outcome: m.speculative_replies_total.labels(transport, outcome).inc(),
        )
        stt_config = SttConfig(partial_interval_ms=s.stt_partial_interval_ms,
                               idle_partial_interval_ms=s.stt_idle_partial_interval_ms, beam_size=s.stt_beam_size,
                               window_pad=s.stt_window_pad, min_window=s.stt_min_window,
                               max_turn_s=s.max_turn_seconds, language=s.stt_language or None)
        return Call(stt.whisper, stt.vad, config, emit, stt=stt_config, output=output,
                    tts=tts, responder=responder, hooks=hooks, lead_s=s.response_lead_ms / 1000,
                    frame_ms=s.response_frame_ms, call_id=call_id,
                    ingest=IngestPacer(s.max_audio_speed, s.max_audio_burst_s) if s.max_audio_speed > 0 else None,
                    turn_predictor=stt.turn_model,
                    embed_voice=services.file_models.embed_voice if services.file_models is not None else None,
                    speculate=s.speculative_replies)

    def _refused(self, transport: str, reason: str) -> None:
        self.metrics.sessions_rejected.labels(transport, reason).inc()

    def _expire(self, live: LiveCall) -> None:
        log.info("call %s: session deadline (%s s) reached", live.call.id, self.settings.max_session_seconds)
        live.end("session_expired")

    # --- shutdown --------------------------------------------------------------------------------

    async def drain(self, deadline_s: float, goodbye_s: float = 10.0) -> None:
        """Refuse new calls, let live ones finish within `deadline_s`, then end the rest.

        Each remaining call is told in its own protocol (an error event and close on WebSockets,
        a spoken goodbye on phone calls) and gets `goodbye_s` to finish that."""
        self.draining = True
        live = list(self._calls.values())
        log.info("draining: %d live call(s), up to %.0f s", len(live), deadline_s)
        if live:
            await _wait_all(live, deadline_s)
        left = list(self._calls.values())
        if left:
            log.info("drain deadline: ending %d call(s)", len(left))
            for c in left:
                c.end("server_shutting_down")
            await _wait_all(left, goodbye_s)
        log.info("drained")


def default_turn_detection(s: Settings, conversation: bool = True) -> TurnDetection:
    """The node's turn detection: semantic_vad where configured for conversations; transcription
    sessions keep server_vad (no reply waits on the end of their turns)."""
    kw: dict[str, Any] = {"threshold": s.vad_threshold, "prefix_padding_ms": s.vad_prefix_padding_ms,
          "min_speech_ms": s.vad_min_speech_ms}
    if conversation and s.turn_detection == "semantic_vad":
        return TurnDetection.semantic_vad(s.turn_eagerness, **kw)
    return TurnDetection(silence_ms=s.vad_silence_ms, **kw)


async def _wait_all(calls: list[LiveCall], within_s: float) -> None:
    waits = [asyncio.ensure_future(c.ended.wait()) for c in calls]
    try:
        await asyncio.wait(waits, timeout=within_s)
    finally:
        for w in waits:
            w.cancel()
