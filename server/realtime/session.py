"""One realtime session: client events in, server events out; transport-agnostic.

The WebSocket and WebRTC (server/webrtc_call.py) transports feed parsed events and audio and
deliver what `send` is given. Audio is decoded, resampled to 16 kHz and handed to the session's
`StreamingTranscriber`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from kombain.server.metrics import Metrics
from kombain.server.realtime.protocol import (
    ProtocolError,
    SessionConfig,
    apply_session_update,
    decode_audio_b64,
    error_event,
    new_id,
    server_event,
    session_object,
)
from kombain.server.realtime.responses import render as render_response
from kombain.server.settings import Settings
from kombain.streaming.audio import INTERNAL_RATE, AudioFormatError, Resampler, decode
from kombain.streaming.conversation import (
    Conversation,
    ConversationEvent,
    ResponseAudio,
    ResponseFinished,
    TurnTiming,
)
from kombain.streaming.endpointer import TurnDetection
from kombain.streaming.responders import Responder
from kombain.streaming.stt_events import (
    ClearedEvent,
    CommittedEvent,
    SpeechStartedEvent,
    SpeechStoppedEvent,
    SttEvent,
    TranscriptCompletedEvent,
    TranscriptDeltaEvent,
    TranscriptFailedEvent,
    VoiceOnsetCancelledEvent,
    VoiceOnsetEvent,
)
from kombain.streaming.transcriber import StreamingTranscriber, SttConfig
from kombain.streaming.tts import VoicePool
from kombain.streaming.vad import SileroVadModel
from kombain.streaming.whisper_runtime import WhisperRuntime

log = logging.getLogger("kombain.session")

Send = Callable[[dict[str, Any]], None]


class AudioSink(Protocol):
    """Where a media transport wants reply audio: PCM16 LE mono at `rate`; `flush` on barge-in."""

    def write(self, pcm: bytes, rate: int) -> None: ...

    def flush(self) -> None: ...

    # Optional: `hold(True)` pauses playback of what is buffered (a possible interruption),
    # `hold(False)` resumes it; a confirmed interruption then flushes.


class SessionRegistry:
    """Live sessions on this node, for admission control and /readyz."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._sessions: dict[str, RealtimeSession | None] = {}

    @property
    def count(self) -> int:
        return len(self._sessions)

    @property
    def full(self) -> bool:
        return len(self._sessions) >= self.limit

    @property
    def busy(self) -> int:
        """Sessions in the middle of a turn or a spoken reply."""
        return sum(1 for s in self._sessions.values() if s is not None and s.busy)

    def add(self, session_id: str, session: RealtimeSession | None = None) -> bool:
        if self.full:
            return False
        self._sessions[session_id] = session
        return True

    def remove(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)


class RealtimeSession:
    """Protocol handling for one caller. `handle_event` / `handle_audio_bytes` never raise for bad input."""

    def __init__(self, settings: Settings, metrics: Metrics, runtime: WhisperRuntime, vad: SileroVadModel,
                 send: Send, *, transport: str = "websocket", kind: str = "realtime",
                 tts: VoicePool | None = None, responder: Responder | None = None,
                 on_hangup: Callable[[], None] | None = None,
                 audio_sink: AudioSink | None = None) -> None:
        self.id = new_id("sess")
        self.settings = settings
        self.metrics = metrics
        self.transport = transport
        self._send = send
        self.config = SessionConfig(kind=kind, turn_detection=_td(settings))
        self._resampler = Resampler(self.config.input_format.rate, INTERNAL_RATE)
        self._media_resampler: Resampler | None = None
        self.transcriber = StreamingTranscriber(
            runtime, vad.new_stream(), self._stt_config(), self._on_stt_event,
            on_vad_seconds=metrics.vad_seconds.observe,
        )
        self.model_name = runtime.name
        self._on_hangup = on_hangup or (lambda: None)
        # Media transports (WebRTC, telephony) take reply audio as PCM16 instead of JSON deltas.
        self._sink = audio_sink
        self.conversation: Conversation | None = None
        if tts is not None and responder is not None:
            self.conversation = Conversation(
                tts, responder, self._on_conversation_event, rate=self.config.output_format.rate,
                lead_s=settings.response_lead_ms / 1000, frame_ms=settings.response_frame_ms,
                on_turn=metrics.turn_seconds.observe, on_barge_in=metrics.barge_in_seconds.observe,
                on_hold=self._hold_sink,
            )
            self._sync_conversation()

    @property
    def busy(self) -> bool:
        return self.transcriber.speaking or (self.conversation is not None and self.conversation.speaking)

    # --- lifetime --------------------------------------------------------------------------------

    def start(self) -> None:
        created = "transcription_session.created" if self.config.kind == "transcription" and self.config.beta_names else "session.created"
        self._send(server_event(created, session=session_object(self.id, self.config, self.model_name)))

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.transcriber.run())
            if self.conversation is not None:
                tg.create_task(self.conversation.run())

    def close(self) -> None:
        self.transcriber.close()
        if self.conversation is not None:
            self.conversation.close()

    # --- input -----------------------------------------------------------------------------------

    def handle_event(self, event: dict[str, Any]) -> None:
        etype = event["type"]
        try:
            handler = _HANDLERS.get(etype)
            if handler is None:
                raise ProtocolError(f"unknown or unsupported event type {etype!r}", "unknown_event_type", "type")
            handler(self, event)
        except ProtocolError as exc:
            self.send_error(str(exc), exc.code, exc.param, exc.event_id or event.get("event_id"))

    def handle_audio_bytes(self, data: bytes, event_id: str | None = None) -> None:
        """Raw audio in the session's input format (the binary-frame fast path)."""
        if not data:
            return
        fmt = self.config.input_format
        if len(data) % fmt.bytes_per_sample:
            self.send_error(f"audio of {len(data)} bytes is not a whole number of 16-bit samples",
                            "invalid_audio", "audio", event_id)
            return
        try:
            samples = decode(data, fmt)
        except AudioFormatError as exc:
            self.send_error(str(exc), "invalid_audio", "audio", event_id)
            return
        self.transcriber.push_audio(self._resampler.process(samples))

    def push_samples(self, samples: np.ndarray, rate: int) -> None:
        """Float32 mono audio from a media transport (already decoded), at any supported rate."""
        if self._media_resampler is None or self._media_resampler.in_rate != rate:
            self._media_resampler = Resampler(rate, INTERNAL_RATE)
        self.transcriber.push_audio(self._media_resampler.process(samples))

    def send_error(self, message: str, code: str, param: str | None = None, event_id: str | None = None) -> None:
        self.metrics.client_errors.labels(code).inc()
        self._send(error_event(message, code, param, event_id))

    # --- event handlers --------------------------------------------------------------------------

    def _session_update(self, event: dict[str, Any]) -> None:
        new = apply_session_update(self.config, event.get("session"), event["type"])
        if new.input_format != self.config.input_format:
            self._resampler = Resampler(new.input_format.rate, INTERNAL_RATE)
        self.config = new
        self.transcriber.update_config(self._stt_config())
        self._sync_conversation()
        beta_tx = event["type"] == "transcription_session.update"
        self._send(server_event("transcription_session.updated" if beta_tx else "session.updated",
                                session=session_object(self.id, self.config, self.model_name)))

    def _append(self, event: dict[str, Any]) -> None:
        self.handle_audio_bytes(decode_audio_b64(event), event.get("event_id"))

    def _commit(self, event: dict[str, Any]) -> None:
        err = self.transcriber.commit()
        if err:
            raise ProtocolError(err, "input_audio_buffer_commit_empty", None, event.get("event_id"))

    def _clear(self, event: dict[str, Any]) -> None:
        self.transcriber.clear()

    def _response_create(self, event: dict[str, Any]) -> None:
        if self.conversation is None:
            raise ProtocolError("this session does not speak (a transcription session, or no voice loaded)",
                                "responses_unavailable", None, event.get("event_id"))
        resp = event.get("response") or {}
        if not isinstance(resp, dict):
            raise ProtocolError("'response' must be an object", "invalid_value", "response", event.get("event_id"))
        instructions = resp.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise ProtocolError("response.instructions must be a string", "invalid_value", "response.instructions")
        metadata = resp.get("metadata") or {}
        say = isinstance(metadata, dict) and str(metadata.get("kombain_say", "")).lower() == "true"
        if say and not (instructions or "").strip():
            raise ProtocolError("kombain_say needs the text to speak in response.instructions", "invalid_value",
                                "response.instructions", event.get("event_id"))
        if instructions and len(instructions) > self.settings.tts_max_chars and say:
            raise ProtocolError(f"text to say is over {self.settings.tts_max_chars} characters", "invalid_value",
                                "response.instructions", event.get("event_id"))
        self.conversation.create_response(instructions=None if say else instructions, say=instructions if say else None)

    def _response_cancel(self, event: dict[str, Any]) -> None:
        if self.conversation is None or not self.conversation.cancel("client_cancelled"):
            raise ProtocolError("there is no response in progress to cancel", "response_cancel_not_active",
                                None, event.get("event_id"))

    def _item_truncate(self, event: dict[str, Any]) -> None:
        item_id, end = event.get("item_id"), event.get("audio_end_ms")
        if not isinstance(item_id, str) or not isinstance(end, int) or end < 0:
            raise ProtocolError("conversation.item.truncate needs item_id and a non-negative audio_end_ms",
                                "invalid_value", None, event.get("event_id"))
        self._send(server_event("conversation.item.truncated", item_id=item_id, content_index=0, audio_end_ms=end))

    def _hold_sink(self, held: bool) -> None:
        hold = getattr(self._sink, "hold", None)
        if hold is not None:
            hold(held)

    def _sync_conversation(self) -> None:
        conv = self.conversation
        if conv is None:
            return
        conv.rate = self.config.output_format.rate
        conv.voice = self.config.voice if self.config.voice in conv.pool.catalog else None
        conv.instructions = self.config.instructions
        conv.interrupt = self.config.interrupt_response

    def _on_conversation_event(self, ev: ConversationEvent) -> None:
        if self._sink is not None and isinstance(ev, ResponseAudio):
            self._sink.write(ev.pcm, self.config.output_format.rate)
            return
        if self._sink is not None and isinstance(ev, ResponseFinished) and ev.status == "cancelled":
            self._sink.flush()  # barge-in: drop what the transport still holds
        for out in render_response(ev, self.config):
            self._send(out)
        if isinstance(ev, ResponseFinished):
            self.metrics.responses_total.labels(ev.status).inc()
            if ev.hangup:
                self._on_hangup()

    # --- output ----------------------------------------------------------------------------------

    def _on_stt_event(self, ev: SttEvent) -> None:
        conv = self.conversation
        if isinstance(ev, VoiceOnsetEvent):
            if conv is not None:
                conv.voice_onset(ev.at)
            return
        if isinstance(ev, VoiceOnsetCancelledEvent):
            if conv is not None:
                conv.voice_onset_cleared()
            return
        if isinstance(ev, SpeechStartedEvent):
            if conv is not None:
                conv.speech_started()
            self._send(server_event("input_audio_buffer.speech_started", audio_start_ms=ev.audio_start_ms, item_id=ev.item_id))
        elif isinstance(ev, SpeechStoppedEvent):
            self._send(server_event("input_audio_buffer.speech_stopped", audio_end_ms=ev.audio_end_ms, item_id=ev.item_id))
        elif isinstance(ev, CommittedEvent):
            self._send(server_event("input_audio_buffer.committed", previous_item_id=ev.previous_item_id, item_id=ev.item_id))
        elif isinstance(ev, ClearedEvent):
            self._send(server_event("input_audio_buffer.cleared"))
        elif isinstance(ev, TranscriptDeltaEvent):
            self.metrics.partial_lag_seconds.observe(ev.lag_s)
            self._send(server_event("conversation.item.input_audio_transcription.delta", item_id=ev.item_id,
                                    content_index=0, delta=ev.delta, audio_end_ms=ev.audio_end_ms))
        elif isinstance(ev, TranscriptCompletedEvent):
            self.metrics.stt_final_seconds.observe(ev.latency_s)
            self._send(server_event(
                "conversation.item.input_audio_transcription.completed", item_id=ev.item_id, content_index=0,
                transcript=ev.transcript, audio_start_ms=ev.audio_start_ms, audio_end_ms=ev.audio_end_ms,
                latency_ms=round(ev.latency_s * 1000, 1), decode_ms=round(ev.decode_s * 1000, 1),
                usage={"type": "duration", "seconds": round((ev.audio_end_ms - ev.audio_start_ms) / 1000, 3)},
            ))
            if conv is not None and self.config.kind == "realtime":
                auto = self.config.turn_detection is not None and self.config.create_response
                conv.user_turn(ev.item_id, ev.transcript, TurnTiming(ev.speech_end_at, ev.decided_at, time.monotonic()),
                               respond=auto)
        elif isinstance(ev, TranscriptFailedEvent):
            self._send(server_event("conversation.item.input_audio_transcription.failed", item_id=ev.item_id,
                                    content_index=0, error={"type": "server_error", "code": ev.code, "message": ev.message}))

    def _stt_config(self) -> SttConfig:
        s, c = self.settings, self.config
        return SttConfig(
            turn_detection=c.turn_detection, language=c.language or s.stt_language or None, prompt=c.prompt,
            partial_interval_ms=s.stt_partial_interval_ms, beam_size=s.stt_beam_size,
            window_pad=s.stt_window_pad, min_window=s.stt_min_window, max_turn_s=s.max_turn_seconds,
        )


def _td(settings: Settings) -> TurnDetection:
    return TurnDetection(threshold=settings.vad_threshold, silence_ms=settings.vad_silence_ms,
                         prefix_padding_ms=settings.vad_prefix_padding_ms, min_speech_ms=settings.vad_min_speech_ms)


_HANDLERS: dict[str, Callable[[RealtimeSession, dict[str, Any]], None]] = {
    "session.update": RealtimeSession._session_update,
    "transcription_session.update": RealtimeSession._session_update,
    "input_audio_buffer.append": RealtimeSession._append,
    "input_audio_buffer.commit": RealtimeSession._commit,
    "input_audio_buffer.clear": RealtimeSession._clear,
    "response.create": RealtimeSession._response_create,
    "response.cancel": RealtimeSession._response_cancel,
    "conversation.item.truncate": RealtimeSession._item_truncate,
}
