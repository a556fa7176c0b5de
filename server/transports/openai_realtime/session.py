"""The OpenAI Realtime protocol over one call: client events in, server events out.

A thin adapter: it parses nothing from a socket and runs no models. Client events become calls
on a `Call` (streaming/call.py); the call's typed events become OpenAI server events, in the GA
or beta dialect the client speaks. The WebSocket (server/transports/openai_realtime/connection.py) and WebRTC
(server/transports/webrtc/call.py) transports both use it; the call host opens the call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from kombain.server.host import default_turn_detection
from kombain.server.metrics import Metrics
from kombain.server.settings import Settings
from kombain.server.transports.openai_realtime.items import (
    item_json,
    parse_item,
    parse_mcp,
    parse_response,
)
from kombain.server.transports.openai_realtime.mcp_session import McpSession
from kombain.server.transports.openai_realtime.protocol import (
    ProtocolError,
    SessionConfig,
    apply_session_update,
    decode_audio_b64,
    error_event,
    new_id,
    server_event,
    session_object,
)
from kombain.server.transports.openai_realtime.responses import render as render_response
from kombain.streaming.audio import AudioFormatError, decode
from kombain.streaming.call import (
    AudioOutput,
    Call,
    CallConfig,
    CallError,
    CallEvent,
    DtmfEvent,
    HangupEvent,
    IdleTimeoutEvent,
)
from kombain.streaming.conversation import ResponseAudio, ResponseNotice
from kombain.streaming.items import ItemError, Items
from kombain.streaming.stt_engine import requested_model_error
from kombain.streaming.stt_events import (
    ClearedEvent,
    CommittedEvent,
    SpeechStartedEvent,
    SpeechStoppedEvent,
    TranscriptCompletedEvent,
    TranscriptDeltaEvent,
    TranscriptFailedEvent,
    VoiceOnsetCancelledEvent,
    VoiceOnsetEvent,
)

log = logging.getLogger("kombain.session")

Send = Callable[[dict[str, Any]], None]


class EventAudioOutput:
    """The realtime WebSocket's audio port: reply audio as `response.output_audio.delta` events."""

    def __init__(self, session: RealtimeSession) -> None:
        self._session = session

    def write(self, audio: ResponseAudio, rate: int) -> None:
        for out in render_response(audio, self._session.config):
            self._session.send(out)

    def hold(self, held: bool) -> None:
        pass  # the client plays what it has; the server just stops sending

    def clear(self) -> None:
        pass  # response.done (cancelled) and conversation.item.truncated tell the client

    def bind(self, listener: Callable[[str, int, bool], None]) -> None:
        pass  # the client reports what it played itself (conversation.item.truncate)


class RealtimeSession:
    """One caller speaking the OpenAI Realtime protocol. `handle_event` never raises for bad input."""

    def __init__(self, settings: Settings, metrics: Metrics, send: Send, *, kind: str = "realtime",
                 on_hangup: Callable[[str], None] | None = None) -> None:
        self.id = new_id("sess")
        self.settings = settings
        self.metrics = metrics
        self.send = send
        self.config = SessionConfig(kind=kind, turn_detection=default_turn_detection(settings, kind == "realtime"),
                                    interrupt_min_speech_ms=settings.interrupt_min_speech_ms,
                                    interrupt_min_words=settings.interrupt_min_words)
        self._on_hangup = on_hangup or (lambda reason: None)
        self._call: Call | None = None
        self.model_name = ""
        self._logged_codes: set[str] = set()
        self._mcp: McpSession | None = None  # the MCP servers the session named, once it named one

    @property
    def call(self) -> Call:
        if self._call is None:
            raise RuntimeError("the session has no call yet (attach it after the host opened it)")
        return self._call

    def call_config(self, base: CallConfig) -> CallConfig:
        """The transport-neutral settings this session's OpenAI config stands for."""
        c = self.config
        return replace(base, conversation=c.kind == "realtime", turn_detection=c.turn_detection,
                       language=c.language or base.language, prompt=c.prompt, voice=c.voice,
                       instructions=c.instructions, output_rate=c.output_format.rate,
                       auto_respond=c.create_response, interruptible=c.interrupt_response,
                       interrupt_min_speech_ms=c.interrupt_min_speech_ms, interrupt_min_words=c.interrupt_min_words,
                       modalities=c.modalities, tools=c.tools, tool_choice=c.tool_choice, tool_name=c.tool_name,
                       idle_timeout_ms=c.idle_timeout_ms,
                       max_output_tokens=c.max_output_tokens, word_timestamps=c.word_timestamps,
                       speaker_labels=c.speaker_labels)

    def attach(self, call: Call) -> None:
        self._call = call
        self.model_name = call.model_name

    def audio_output(self) -> AudioOutput:
        return EventAudioOutput(self)

    # --- lifetime --------------------------------------------------------------------------------

    def start(self) -> None:
        created = "transcription_session.created" if self.config.kind == "transcription" and self.config.beta_names else "session.created"
        self.send(server_event(created, session=session_object(self.id, self.config, self.model_name)))

    # --- input -----------------------------------------------------------------------------------

    def handle_event(self, event: dict[str, Any]) -> None:
        etype = event["type"]
        try:
            handler = _HANDLERS.get(etype)
            if handler is None:
                raise ProtocolError(f"unknown or unsupported event type {etype!r}", "unknown_event_type", "type")
            handler(self, event)
        except CallError as exc:
            self.send_error(str(exc), exc.code, None, event.get("event_id"))
        except ItemError as exc:
            self.send_error(str(exc), exc.code, exc.param, event.get("event_id"))
        except ProtocolError as exc:
            self._protocol_error(exc, event)

    async def receive_event(self, event: dict[str, Any]) -> None:
        """`handle_event` for a socket reader: audio goes through `receive_audio_bytes` (sliced,
        paced), and the event loop is yielded after every event."""
        if event["type"] != "input_audio_buffer.append":
            self.handle_event(event)
        else:
            try:
                data = decode_audio_b64(event)
            except ProtocolError as exc:
                self._protocol_error(exc, event)
            else:
                await self.receive_audio_bytes(data, event.get("event_id"))
                return
        await asyncio.sleep(0)

    def _protocol_error(self, exc: ProtocolError, event: dict[str, Any]) -> None:
        self.send_error(str(exc), exc.code, exc.param, exc.event_id or event.get("event_id"))

    async def receive_audio_bytes(self, data: bytes, event_id: str | None = None) -> None:
        """Raw audio from a socket reader: a long message is fed in slices with the event loop free
        between them, and this returns once the client is within its ingest allowance."""
        if (samples := self._decode_bytes(data, event_id)) is not None:
            await self.call.receive_audio(samples, self.config.input_format.rate)
        else:
            await asyncio.sleep(0)

    def handle_audio_bytes(self, data: bytes, event_id: str | None = None) -> None:
        """Raw audio in the session's input format (the binary-frame fast path)."""
        if (samples := self._decode_bytes(data, event_id)) is not None:
            self.call.push_audio(samples, self.config.input_format.rate)

    def _decode_bytes(self, data: bytes, event_id: str | None) -> np.ndarray | None:
        if not data:
            return None
        fmt = self.config.input_format
        if len(data) % fmt.bytes_per_sample:
            self.send_error(f"audio of {len(data)} bytes is not a whole number of 16-bit samples",
                            "invalid_audio", "audio", event_id)
            return None
        try:
            return decode(data, fmt)
        except AudioFormatError as exc:
            self.send_error(str(exc), "invalid_audio", "audio", event_id)
            return None

    def send_error(self, message: str, code: str, param: str | None = None, event_id: str | None = None) -> None:
        self.metrics.client_errors.labels(code).inc()
        if code not in self._logged_codes:  # once per code and session: a flood stays one line
            self._logged_codes.add(code)
            log.info("session %s: error %s (param %s): %s", self.id, code, param, message[:300])
        self.send(error_event(message, code, param, event_id))

    # --- event handlers --------------------------------------------------------------------------

    def _session_update(self, event: dict[str, Any]) -> None:
        raw = event.get("session")
        allowed = tuple(p.strip() for p in self.settings.mcp_allowed_urls.split(",") if p.strip())
        mcp = parse_mcp(raw["tools"], "session.tools", allowed) \
            if isinstance(raw, dict) and raw.get("tools") is not None else None
        config = apply_session_update(self.config, event.get("session"), event["type"])
        if self.model_name and (refused := requested_model_error(config.transcription_model, self.model_name)):
            beta = "input_audio_transcription" in (event.get("session") or {})
            raise ProtocolError(refused, "invalid_value", "session.input_audio_transcription.model" if beta
                                else "session.audio.input.transcription.model")
        self.config = config
        if self._call is not None:
            self._call.update(self.call_config(self._call.config))
        beta_tx = event["type"] == "transcription_session.update"
        self.send(server_event("transcription_session.updated" if beta_tx else "session.updated",
                               session=session_object(self.id, self.config, self.model_name)))
        if mcp is not None and (mcp or self._mcp is not None):
            self._mcp = self._mcp or McpSession(self.send, self.settings.responder_timeout_s)
            self._mcp.update(mcp, self._call.conversation if self._call is not None else None)

    def _append(self, event: dict[str, Any]) -> None:
        self.handle_audio_bytes(decode_audio_b64(event), event.get("event_id"))

    def _commit(self, event: dict[str, Any]) -> None:
        self.call.commit()

    def _clear(self, event: dict[str, Any]) -> None:
        self.call.clear()

    def _dtmf(self, event: dict[str, Any]) -> None:
        digits = event.get("digits")
        if not isinstance(digits, str) or not 1 <= len(digits) <= 32:
            raise ProtocolError("input_audio_buffer.dtmf needs 'digits': a string of 1 to 32 keys",
                                "invalid_value", "digits", event.get("event_id"))
        for d in digits.upper():
            self.call.push_dtmf(d)

    def _response_create(self, event: dict[str, Any]) -> None:
        if not self.call.speaks:
            raise ProtocolError("this session does not speak (a transcription session, or no voice loaded)",
                                "responses_unavailable", None, event.get("event_id"))
        resp = event.get("response") or {}
        if not isinstance(resp, dict):
            raise ProtocolError("'response' must be an object", "invalid_value", "response", event.get("event_id"))
        options = parse_response(resp, self.call.conversation.items if self.call.conversation else _NO_ITEMS,
                                 self.config.tools)
        metadata = options.metadata or {}
        say = metadata.get("kombain_say", "").lower() == "true"
        instructions = options.instructions
        if say and not (instructions or "").strip():
            raise ProtocolError("kombain_say needs the text to speak in response.instructions", "invalid_value",
                                "response.instructions", event.get("event_id"))
        if instructions and len(instructions) > self.settings.tts_max_chars and say:
            raise ProtocolError(f"text to say is over {self.settings.tts_max_chars} characters", "invalid_value",
                                "response.instructions", event.get("event_id"))
        if say:
            options = replace(options, instructions=None, say=instructions)
        self.call.respond(options=options)

    def _response_cancel(self, event: dict[str, Any]) -> None:
        if not self.call.cancel("client_cancelled"):
            raise ProtocolError("there is no response in progress to cancel", "response_cancel_not_active",
                                None, event.get("event_id"))

    def _item_truncate(self, event: dict[str, Any]) -> None:
        item_id, end, index = event.get("item_id"), event.get("audio_end_ms"), event.get("content_index", 0)
        if not isinstance(item_id, str) or isinstance(end, bool) or not isinstance(end, int) or end < 0 \
                or isinstance(index, bool) or not isinstance(index, int):
            raise ProtocolError("conversation.item.truncate needs item_id, content_index and a non-negative "
                                "audio_end_ms", "invalid_value", None, event.get("event_id"))
        self.call.truncate_item(item_id, index, end)
        self.send(server_event("conversation.item.truncated", item_id=item_id, content_index=index, audio_end_ms=end))

    def _item_create(self, event: dict[str, Any]) -> None:
        previous = event.get("previous_item_id")
        if previous is not None and not isinstance(previous, str):
            raise ProtocolError("previous_item_id must be a string", "invalid_value", "previous_item_id")
        self.call.add_item(parse_item(event.get("item")), previous)

    def _buffer_clear(self, event: dict[str, Any]) -> None:
        """WebRTC clients cut the audio the server buffers: the reply stops (nothing playing: no-op)."""
        self.call.cancel("client_cancelled")

    def _item_id(self, event: dict[str, Any]) -> str:
        item_id = event.get("item_id")
        if not isinstance(item_id, str):
            raise ProtocolError(f"{event['type']} needs item_id", "invalid_value", "item_id", event.get("event_id"))
        return item_id

    def _item_retrieve(self, event: dict[str, Any]) -> None:
        item = self.call.item(self._item_id(event))
        self.send(server_event("conversation.item.retrieved", item=item_json(item, self.config.beta_names)))

    def _item_delete(self, event: dict[str, Any]) -> None:
        item_id = self._item_id(event)
        self.call.delete_item(item_id)
        self.send(server_event("conversation.item.deleted", item_id=item_id))

    # --- output ----------------------------------------------------------------------------------

    def on_call_event(self, ev: CallEvent) -> None:
        """Render one of the call's events as OpenAI server events."""
        if isinstance(ev, HangupEvent):
            self._on_hangup(ev.reason)
            return
        if isinstance(ev, DtmfEvent):
            # OpenAI's name for a key press on a SIP call.
            self.send(server_event("input_audio_buffer.dtmf_event_received", event=ev.digit,
                                   received_at=int(time.time())))
            return
        if isinstance(ev, IdleTimeoutEvent):
            self.send(server_event("input_audio_buffer.timeout_triggered", audio_start_ms=ev.audio_start_ms,
                                   audio_end_ms=ev.audio_end_ms, item_id=ev.item_id))
            return
        if isinstance(ev, SpeechStartedEvent):
            self.send(server_event("input_audio_buffer.speech_started", audio_start_ms=ev.audio_start_ms, item_id=ev.item_id))
        elif isinstance(ev, SpeechStoppedEvent):
            self.send(server_event("input_audio_buffer.speech_stopped", audio_end_ms=ev.audio_end_ms, item_id=ev.item_id))
        elif isinstance(ev, CommittedEvent):
            self.send(server_event("input_audio_buffer.committed", previous_item_id=ev.previous_item_id, item_id=ev.item_id))
        elif isinstance(ev, ClearedEvent):
            self.send(server_event("input_audio_buffer.cleared"))
        elif isinstance(ev, TranscriptDeltaEvent):
            self.send(server_event("conversation.item.input_audio_transcription.delta", item_id=ev.item_id,
                                   content_index=0, delta=ev.delta, audio_end_ms=ev.audio_end_ms))
        elif isinstance(ev, TranscriptCompletedEvent):
            self.send(server_event(
                "conversation.item.input_audio_transcription.completed", item_id=ev.item_id, content_index=0,
                transcript=ev.transcript, audio_start_ms=ev.audio_start_ms, audio_end_ms=ev.audio_end_ms,
                latency_ms=round(ev.latency_s * 1000, 1), decode_ms=round(ev.decode_s * 1000, 1),
                usage={"type": "duration", "seconds": round((ev.audio_end_ms - ev.audio_start_ms) / 1000, 3)},
                **({"kombain_words": [{"word": w.word.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
                                      for w in ev.words]} if self.config.word_timestamps else {}),
                **({"kombain_speaker": ev.speaker} if self.config.speaker_labels else {}),
            ))
        elif isinstance(ev, TranscriptFailedEvent):
            self.send(server_event("conversation.item.input_audio_transcription.failed", item_id=ev.item_id,
                                   content_index=0, error={"type": "server_error", "code": ev.code, "message": ev.message}))
        elif isinstance(ev, VoiceOnsetEvent | VoiceOnsetCancelledEvent):
            return  # the call's own barge-in signal; OpenAI's protocol has no event for it
        elif isinstance(ev, ResponseNotice):
            self.send_error(ev.message, ev.code)
        else:
            for out in render_response(ev, self.config):
                self.send(out)


_HANDLERS: dict[str, Callable[[RealtimeSession, dict[str, Any]], None]] = {
    "session.update": RealtimeSession._session_update,
    "transcription_session.update": RealtimeSession._session_update,
    "input_audio_buffer.append": RealtimeSession._append,
    "input_audio_buffer.commit": RealtimeSession._commit,
    "input_audio_buffer.clear": RealtimeSession._clear,
    "input_audio_buffer.dtmf": RealtimeSession._dtmf,
    "response.create": RealtimeSession._response_create,
    "response.cancel": RealtimeSession._response_cancel,
    "conversation.item.truncate": RealtimeSession._item_truncate,
    "conversation.item.create": RealtimeSession._item_create,
    "conversation.item.retrieve": RealtimeSession._item_retrieve,
    "conversation.item.delete": RealtimeSession._item_delete,
    "output_audio_buffer.clear": RealtimeSession._buffer_clear,
}
_NO_ITEMS = Items()
