"""How one response runs, for `Conversation`: the responder's pieces to synthesis, the audio
paced to the caller in frames, the response's items and events, and its end (what was heard).

`Conversation` (streaming/conversation.py) decides which response runs and when (turns,
interruptions, requests, prepared replies); this base runs it. A response whose `released` is
clear is a prepared reply (streaming/speculation.py): it works, but shows nothing until released.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from kombain.streaming.aio import aclose_quietly, either, until
from kombain.streaming.conversation_events import (
    ConversationEvent,
    ItemAdded,
    ItemDone,
    ResponseAudio,
    ResponseFailed,
    ResponseFinished,
    ResponseNotice,
    ResponseOptions,
    ResponseStarted,
    ResponseText,
    TurnTiming,
)
from kombain.streaming.items import Item, Items, Part, heard_text
from kombain.streaming.responders import (
    Notice,
    ReplyPiece,
    Responder,
    ResponderError,
    ResponseRequest,
    ServerTools,
)
from kombain.streaming.response_state import Response, heard_ms, status_of, take, timings, usage
from kombain.streaming.tool_runs import run_approved, run_tool_calls
from kombain.streaming.tts import SpeechStream, VoicePool

log = logging.getLogger("kombain.conversation")

APOLOGY = "Sorry, I can't answer that right now."
MAX_TOOL_ROUNDS = 4  # responses in a row that go on from a server-run tool's output


class ReplyRunner:
    """Runs responses for `Conversation`, which sets these attributes up."""

    pool: VoicePool
    responder: Responder
    _emit: Callable[[ConversationEvent], None]
    voice: str | None
    rate: int
    lead_s: float
    frame_ms: int
    items: Items
    server_tools: ServerTools | None
    played_until: float
    _clock: Callable[[], float]
    _on_turn: Callable[[float], None]
    _on_hold: Callable[[bool], None]
    _active: Response | None
    _hold: asyncio.Event
    _noticed: set[str]

    def _request(self, opts: ResponseOptions) -> ResponseRequest:
        raise NotImplementedError

    def _start(self, source: AsyncIterator[ReplyPiece] | None, timing: TurnTiming | None, force: bool = False,
               options: ResponseOptions | None = None, depth: int = 0) -> str:
        raise NotImplementedError

    async def _respond(self, resp: Response, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait({previous})  # one response at a time, in order
        if resp.cancel_reason is not None:
            return
        if resp.released.is_set():  # else prepared: shown when released
            self._show(resp)
        ran = False
        try:
            if (resp.asks_responder and self.server_tools is not None and await self._released(resp)
                    and await run_approved(self, resp)):  # the model answers from their output
                await aclose_quietly(resp.source)
                resp.request = self._request(resp.options)
                resp.source = self.responder.respond(resp.request)
            if resp.audio:
                await self._speak(resp)
            else:
                await self._write(resp)
            if resp.cancel_reason is None and await self._released(resp):
                ran = await run_tool_calls(self, resp)
        except Exception as exc:  # synthesis failure: report, keep the session
            log.warning("response %s failed: %r", resp.id, exc)
            resp.error = resp.error or f"{type(exc).__name__}: {exc}"
        finally:
            self._finish(resp)
        if ran and resp.cancel_reason is None and resp.options.in_conversation and resp.depth < MAX_TOOL_ROUNDS:
            # A tool the server ran answered: the model goes on from its output in a new response.
            self._start(None, None, options=replace(resp.options, say=None, hangup=False), depth=resp.depth + 1)

    def _show(self, resp: Response) -> None:
        """The response starts for the client: it becomes the current one (unless out of band), and
        what it did while prepared (a notice) follows its response.created."""
        if not resp.side:
            self._active = resp
            self._set_hold(False)
        self._emit(ResponseStarted(resp.id, resp.item_id, resp.options, resp.modalities))
        held, resp.held = resp.held, []
        for ev in held:
            self._emit(ev)

    def _out(self, resp: Response, ev: ConversationEvent) -> None:
        """An event of `resp`'s, held while the response is only prepared."""
        if resp.released.is_set():
            self._emit(ev)
        else:
            resp.held.append(ev)

    async def _released(self, resp: Response) -> bool:
        """Wait until a prepared response is released (True) or dropped (False)."""
        if not resp.released.is_set():
            await either(resp.released.wait(), resp.cancelled.wait())
        return resp.released.is_set() and resp.cancel_reason is None

    async def _speak(self, resp: Response) -> None:
        stream = self.pool.stream(self.voice, self.rate)
        feeder = asyncio.ensure_future(self._feed(resp, stream))
        try:
            async for chunk in until(stream, resp.cancelled):
                await self._play(resp, chunk.text, chunk.pcm)
                if resp.cancel_reason is not None:
                    break
            if resp.cancel_reason is None:
                await feeder  # surfaces responder errors (already spoken as an apology)
        finally:
            stream.cancel()
            feeder.cancel()

    async def _write(self, resp: Response) -> None:
        """A text-only response: the responder's text goes out as it comes, no synthesis."""
        try:
            async for piece in until(resp.source, resp.cancelled):
                text = self._take(resp, piece)
                if text:
                    if not await self._released(resp):  # a prepared reply dropped before it was shown
                        break
                    if resp.first_text_at is None:
                        resp.first_text_at = self._clock()
                    message = self._open_message(resp, "output_text")
                    message.content[0].text = (message.content[0].text or "") + text
                    self._emit(ResponseText(resp.id, message.id, text, audio=False,
                                            output_index=resp.output.index(message)))
                if resp.incomplete:
                    break
        except ResponderError as exc:
            resp.error = str(exc)
        finally:
            await aclose_quietly(resp.source)

    def _take(self, resp: Response, piece: ReplyPiece) -> str:
        """One piece from the responder: its text (cut at max_output_tokens), or "" once noted."""
        if isinstance(piece, Notice):
            if piece.code not in self._noticed:
                self._noticed.add(piece.code)
                self._out(resp, ResponseNotice(resp.id, piece.code, piece.message))
            return ""
        return take(resp, piece)

    def _open_message(self, resp: Response, kind: str) -> Item:
        """The response's assistant message, made when its first words go out."""
        if resp.message is None:
            part = Part(kind, text="" if kind == "output_text" else None, transcript="" if kind == "output_audio" else None)
            resp.message = Item(resp.item_id, "message", "assistant", [part], status="in_progress")
            self._output_item(resp, resp.message)
        return resp.message

    def _output_item(self, resp: Response, item: Item) -> None:
        previous = None
        if resp.options.in_conversation:
            previous = self.items.add(item)
        resp.output.append(item)
        self._emit(ItemAdded(item.copy(), previous, resp.id, len(resp.output) - 1, resp.options.in_conversation))

    def _previous(self, resp: Response, item: Item) -> str | None:
        return self.items.previous_id(item.id) if resp.options.in_conversation else None

    async def _feed(self, resp: Response, stream: SpeechStream) -> None:
        try:
            async for piece in resp.source:
                text = self._take(resp, piece)
                if resp.first_text_at is None and text.strip():
                    resp.first_text_at = self._clock()
                if text:
                    stream.push_text(text)
                if resp.hangup or resp.incomplete:
                    break
        except ResponderError as exc:
            resp.error = str(exc)
            log.info("response %s: responder failed: %s", resp.id, exc)
            self._out(resp, ResponseFailed(resp.id, "responder_failed", str(exc)))
            stream.push_text(("" if resp.first_text_at is None else " ") + APOLOGY)
        finally:
            if not stream.closed:
                stream.end_input()
            await aclose_quietly(resp.source)

    async def _play(self, resp: Response, text: str, pcm: bytes) -> None:
        frame = self.rate * self.frame_ms // 1000 * 2
        start_ms = resp.sent_ms
        first = True
        for i in range(0, len(pcm), frame):
            # Wait while too far ahead of the caller, or while an interruption is being confirmed.
            while True:
                if resp.cancel_reason is not None:
                    if not first:  # cut mid-clause: keep its whole length, so heard words scale
                        full_ms = round(len(pcm) / 2 / self.rate * 1000)
                        self._clause(resp, (text, start_ms, start_ms + full_ms))
                    return
                if not resp.released.is_set():  # prepared: the first frame leaves when it is released
                    await either(resp.released.wait(), resp.cancelled.wait())
                    continue
                if not self._hold.is_set():
                    await either(self._hold.wait(), resp.cancelled.wait())
                    continue
                ahead = resp.play_end - self._clock()
                if ahead <= self.lead_s:
                    break
                await either(asyncio.sleep(ahead - self.lead_s), resp.cancelled.wait())
            piece = pcm[i : i + frame]
            now = self._clock()
            if first:
                message = self._open_message(resp, "output_audio")
                self._emit(ResponseText(resp.id, message.id, text if not resp.chunks else " " + text))
                first = False
            if resp.first_audio_at is None:
                resp.first_audio_at = now
                if resp.timing is not None:
                    self._on_turn(now - resp.timing.speech_end_at)
            dur = len(piece) / 2 / self.rate
            resp.play_end = max(resp.play_end, now) + dur
            resp.sent_ms += round(dur * 1000)
            if resp.message is not None:
                resp.message.content[0].audio_ms = resp.sent_ms
            self._emit(ResponseAudio(resp.id, resp.item_id, piece, resp.sent_ms))
        self._clause(resp, (text, start_ms, resp.sent_ms))

    def _clause(self, resp: Response, clause: tuple[str, int, int]) -> None:
        resp.chunks.append(clause)
        if resp.message is not None:
            part = resp.message.content[0]
            part.clauses.append(clause)
            part.transcript = " ".join(c[0].strip() for c in part.clauses if c[0].strip())

    def _finish(self, resp: Response) -> None:
        if not resp.released.is_set():
            return  # a prepared reply that was dropped (or failed) unseen: nothing was shown
        now = self._clock()
        cancelled = resp.cancel_reason is not None
        heard = resp.sent_ms
        if resp.audio and not resp.side:
            self.played_until = now if cancelled else max(now, resp.play_end)
            heard = heard_ms(resp, now) if cancelled or resp.client_heard_ms is not None else resp.sent_ms
        transcript = heard_text(resp.chunks, heard) if resp.audio else ""
        message = resp.message
        if message is not None:
            part = message.content[0]
            if resp.audio:
                part.transcript, part.audio_ms = transcript, resp.sent_ms
            else:
                transcript = part.text or ""
            message.status = "incomplete" if cancelled or resp.incomplete else "completed"
            self._emit(ItemDone(message.copy(), self._previous(resp, message), resp.id,
                                resp.output.index(message), resp.options.in_conversation))
        status, reason = status_of(resp)
        self._emit(ResponseFinished(
            resp.id, resp.item_id, status, reason, transcript, resp.sent_ms, heard, timings(resp),
            resp.hangup and not cancelled, tuple(i.copy() for i in resp.output), usage(resp), resp.error,
            resp.options, resp.modalities, truncated=cancelled and message is not None and resp.audio,
        ))
        if self._active is resp:
            self._active = None
        if not resp.side:
            self._set_hold(False)

    def _set_hold(self, held: bool) -> None:
        if held == (not self._hold.is_set()):
            return
        if held:
            self._hold.clear()
        else:
            self._hold.set()
        self._on_hold(held)
