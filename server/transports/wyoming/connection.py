"""One Wyoming connection: its events read in order and answered in order.

A connection carries requests one after another: `describe`, a transcription, a synthesis, a
handled transcript. Each request that uses the node (all but describe and ping) is one call in
the call host, from its first event to its last answer: admitted like any call (full, draining,
not ready are an `error` event with that code), counted in the metrics as transport `wyoming`,
ended by the drain. Bad events get an `error` event and the connection goes on; a broken frame,
too many bad events, or `KOMBAIN_WYOMING_IDLE_TIMEOUT_S` without an event end it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from kombain.server.host import CallRefused
from kombain.server.ids import new_id
from kombain.server.transports.wyoming import info as info_mod
from kombain.server.transports.wyoming.asr import (
    Transcription,
    bias_prompt,
    check_language,
    transcript_events,
)
from kombain.server.transports.wyoming.handle import Conversation
from kombain.server.transports.wyoming.protocol import (
    BadEvent,
    Event,
    FramingError,
    WyomingProtocol,
    audio_format,
    encode,
    error,
    name_field,
    text_field,
    voice_choice,
)
from kombain.server.transports.wyoming.speech import open_stream, pick_voice, play
from kombain.streaming.tts import Overloaded, SpeechStream

if TYPE_CHECKING:
    from kombain.server.transports.wyoming.listener import WyomingServer

log = logging.getLogger("kombain.wyoming")

MAX_BAD_EVENTS = 20  # bad events one connection may send before it is closed
_WRITE_STALL_S = 10.0  # a client that reads nothing this long has stopped reading
READ_BYTES = 64 * 1024


async def linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Before closing on a client: send what is queued and read what it sent meanwhile (a close
    with unread data is a reset, which can destroy the error event before it is read)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1):
            await writer.drain()
            writer.write_eof()
            while await reader.read(READ_BYTES):
                pass


class _Closed(Exception):
    """End this connection (after what was sent)."""


class WyomingConnection:
    """One client: events in order, answered in order."""

    def __init__(self, server: WyomingServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server, self.reader, self.writer = server, reader, writer
        self.settings, self.host, self.services = server.settings, server.host, server.services
        self.proto = WyomingProtocol()
        self.conn_id = new_id("wy")
        self.log = logging.LoggerAdapter(log, {"conn": self.conn_id})
        self.bad = 0
        self.closing: str | None = None
        # The request in progress
        self.stack: contextlib.AsyncExitStack | None = None
        self.transcribe: tuple[str | None, str | None] | None = None  # (language, prompt) from a transcribe
        self.asr: Transcription | None = None
        self.stream: SpeechStream | None = None
        self.player: asyncio.Task[None] | None = None
        self.conversation: Conversation | None = None

    # --- sending --------------------------------------------------------------------------------

    def push(self, data: bytes) -> None:
        """Queue bytes without waiting (callbacks); `send` waits for the client to take them."""
        if not self.writer.is_closing():
            self.writer.write(data)

    async def send(self, data: bytes) -> None:
        self.push(data)
        async with asyncio.timeout(_WRITE_STALL_S):
            await self.writer.drain()

    def abort(self, reason: str) -> None:
        """The host ends the request (drain deadline, session deadline): say so and close."""
        self.closing = reason
        self.push(error(f"the server ended this request: {reason}", reason))
        self.writer.close()

    # --- the read loop --------------------------------------------------------------------------

    async def serve(self) -> None:
        idle = self.settings.wyoming_idle_timeout_s
        try:
            while True:
                try:
                    async with asyncio.timeout(idle if idle > 0 else None):
                        data = await self.reader.read(READ_BYTES)
                except TimeoutError:
                    self.server.count("idle_timeout")
                    if self._in_request():
                        await self.send(error(f"no event for {idle:g} s; the request is abandoned", "timeout"))
                    self.log.info("idle for %.0f s: closing", idle)
                    return
                if not data:
                    return
                try:
                    events = self.proto.feed(data)
                except FramingError as exc:
                    self.server.count(exc.code)
                    self.log.info("closing on a broken frame: %s", exc)
                    await self.send(error(str(exc), exc.code))
                    return
                for ev in events:
                    await self._one(ev)
        except (_Closed, ConnectionError, TimeoutError) as exc:
            self.log.info("connection closed: %r", exc)
        finally:
            await self._end_request()
            await linger(self.reader, self.writer)

    def _in_request(self) -> bool:
        return self.stack is not None or self.transcribe is not None

    async def _one(self, ev: Event) -> None:
        try:
            await self._dispatch(ev)
        except BadEvent as exc:
            self.bad += 1
            self.server.count(exc.code)
            self.log.info("bad %s event: %s", ev.type, exc)
            await self.send(error(str(exc), exc.code))
            if self.bad >= MAX_BAD_EVENTS:
                await self.send(error(f"{MAX_BAD_EVENTS} bad events: closing", "too_many_errors"))
                raise _Closed("too many bad events") from None
        except CallRefused as exc:
            self.server.count(exc.code)
            await self._end_request()
            await self.send(error(str(exc), exc.code))
        except Overloaded as exc:
            await self._end_request()
            await self.send(error(str(exc) or "speech synthesis is at capacity; retry shortly", "server_busy"))

    async def _dispatch(self, ev: Event) -> None:
        kind = ev.type
        if kind == "describe":
            await self.send(encode("info", self.server.info()))
        elif kind == "ping":
            await self.send(encode("pong", {"text": text_field(ev, "text", self.proto.limits, required=False)}))
        elif kind == "select-program":
            name = name_field(ev.data, "name", "program name")
            if name not in info_mod.program_names(self.server.info()):
                raise BadEvent(f"no program {name!r} here", "program_not_found")
        elif kind == "transcribe":
            self._transcribe(ev)
        elif kind in ("audio-start", "audio-chunk", "audio-stop"):
            await self._audio(ev)
        elif kind in ("synthesize", "synthesize-start", "synthesize-chunk", "synthesize-stop"):
            await self._synthesis(ev)
        elif kind == "transcript":
            await self._handle(ev)
        elif kind == "error":
            self.log.info("client reports an error: %s", ev.data.get("text"))
        else:
            raise BadEvent(f"event type {kind[:64]!r} is not served here "
                           "(asr: transcribe/audio-*; tts: synthesize*; handle: transcript)", "unsupported_event")

    # --- requests ---------------------------------------------------------------------------------

    async def _begin_request(self) -> contextlib.AsyncExitStack:
        await self._end_request()
        self.stack = contextlib.AsyncExitStack()
        return self.stack

    async def _end_request(self) -> None:
        stack, self.stack = self.stack, None
        self.asr, self.stream, self.transcribe = None, None, None
        player, self.player = self.player, None
        if player is not None and not player.done():
            player.cancel()
            # Its end (cancelled, or failed) is collected; a cancellation of this task still propagates.
            await asyncio.gather(player, return_exceptions=True)
        if stack is not None:
            await stack.aclose()

    def _busy(self, what: str) -> None:
        if self.asr is not None:
            raise BadEvent(f"{what} during a transcription; send audio-stop first", "request_in_progress")
        if self.stream is not None:
            raise BadEvent(f"{what} during a synthesis stream; send synthesize-stop first", "request_in_progress")

    # speech to text

    def _transcribe(self, ev: Event) -> None:
        self._busy("transcribe")
        runtime = self.services.stt.whisper if self.services.stt is not None else None
        if runtime is None:
            raise BadEvent("speech to text is not running on this node", "asr_unavailable")
        model = name_field(ev.data, "name", "model name")
        if model is not None and model not in (runtime.name, info_mod.ASR_PROGRAM, *info_mod.STT_ALIASES):
            raise BadEvent(f"model {model!r} is not served here; use {runtime.name!r}", "model_not_found")
        language = name_field(ev.data, "language", "language")
        problem = check_language(language, runtime)
        if problem:
            raise BadEvent(problem, "language_not_supported")
        self.transcribe = (language.replace("_", "-").split("-", 1)[0].lower() if language else None,
                           bias_prompt(ev.data))

    async def _audio(self, ev: Event) -> None:
        if ev.type == "audio-start":
            audio_format(ev.data)  # checked now: an impossible format never opens a call
            self._busy("audio-start")
            if self.services.stt is None:
                raise BadEvent("speech to text is not running on this node", "asr_unavailable")
            language, prompt = self.transcribe or (None, None)
            stack = await self._begin_request()
            started = Transcription(self.host, self.push, language, self.abort, new_id("call"), prompt)
            await started.start(stack)
            self.asr = started
            return
        asr = self.asr
        if asr is None:
            raise BadEvent(f"{ev.type} without audio-start", "audio_not_started")
        if ev.type == "audio-chunk":
            fmt = audio_format(ev.data)
            samples = fmt.to_mono_float(ev.payload)
            if len(samples):
                await asr.push(samples, fmt.rate)
            return
        text, failed = await asr.finish()
        if failed and not text:
            await self._end_request()
            await self.send(error(f"transcription failed: {failed}", "transcription_failed"))
            return
        asr.begin()
        await self.send(transcript_events(text, asr.result_language))
        await self._end_request()

    # text to speech

    async def _synthesis(self, ev: Event) -> None:
        pool = self.services.tts
        if ev.type == "synthesize":
            if self.stream is not None:
                return  # sent beside a stream for older servers (as wyoming-piper does): the stream speaks
            self._busy("synthesize")
            text = text_field(ev, "text", self.proto.limits)
            if pool is None:
                raise BadEvent("text to speech is not running on this node", "tts_unavailable")
            voice = pick_voice(pool, voice_choice(ev))
            stack = await self._begin_request()
            await self._open_call(stack)
            stream, rate = open_stream(pool, voice)
            stack.push_async_callback(stream.aclose)
            stream.push_text(text or "")
            stream.end_input()
            await play(stream, rate, self.send, per_chunk=False)
            await self._end_request()
        elif ev.type == "synthesize-start":
            self._busy("synthesize-start")
            if pool is None:
                raise BadEvent("text to speech is not running on this node", "tts_unavailable")
            voice = pick_voice(pool, voice_choice(ev))
            stack = await self._begin_request()
            await self._open_call(stack)
            stream, rate = open_stream(pool, voice)
            stack.push_async_callback(stream.aclose)
            self.stream = stream
            self.player = asyncio.create_task(self._play_stream(stream, rate))
        else:
            live = self.stream
            if live is None:
                raise BadEvent(f"{ev.type} without synthesize-start", "synthesize_not_started")
            if ev.type == "synthesize-chunk":
                try:
                    live.push_text(text_field(ev, "text", self.proto.limits) or "")
                except ValueError as exc:  # too much text waiting to be spoken
                    raise BadEvent(str(exc), "text_too_long") from None
                return
            live.end_input()
            player = self.player
            if player is not None:
                await asyncio.shield(player)  # the stream's audio and synthesize-stopped go first
            await self._end_request()

    async def _play_stream(self, stream: SpeechStream, rate: int) -> None:
        try:
            await play(stream, rate, self.send, per_chunk=True)
            await self.send(encode("synthesize-stopped"))
        except Overloaded:
            self.push(error("speech synthesis is at capacity; retry shortly", "server_busy"))
        except (ConnectionError, TimeoutError):
            self.writer.close()

    # conversation

    async def _handle(self, ev: Event) -> None:
        self._busy("transcript")
        text = text_field(ev, "text", self.proto.limits) or ""
        if self.conversation is None:
            from kombain.server.responders import build_responder

            self.conversation = Conversation(build_responder(self.settings, self.services.ivr_script))
        stack = await self._begin_request()
        await self._open_call(stack)
        try:
            await self.conversation.answer(text, self.send)
        except (ConnectionError, TimeoutError):
            raise
        except Exception as exc:  # the responder failed (an LLM endpoint down): the client hears why
            self.log.warning("responder failed: %s", exc)
            await self.send(encode("not-handled", {"text": f"the responder failed: {exc}"}))
        await self._end_request()

    async def _open_call(self, stack: contextlib.AsyncExitStack) -> None:
        """Count a synthesis or a handled transcript as a call (admission, metrics, drain)."""
        await stack.enter_async_context(self.host.open_call(
            "wyoming", self.host.default_config(conversation=False), lambda ev: None, end=self.abort,
            call_id=new_id("call")))
