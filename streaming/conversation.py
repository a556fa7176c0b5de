"""Turn-taking: the conversation's items, and after each turn (or on request) a response from the
responder, synthesised and sent paced to real time, stopped at once when the caller barges in.
Transport-agnostic: events go to `emit`.

Pacing keeps at most `lead_s` of audio ahead of the caller's (estimated) playhead, so the server
knows what was heard. Barge-in is two-step: at the first voiced frame (`voice_onset`) sending is
held; if the endpointer confirms speech (`speech_started`) the reply is cancelled and its item
truncated to what was heard; if it was a blip (`voice_onset_cleared`) sending resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from kombain.streaming.aio import aclose_quietly, either, until
from kombain.streaming.conversation_events import (
    ArgumentsDelta,
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
    ToolRunState,
    TurnTiming,
)
from kombain.streaming.items import Item, ItemError, Items, Part, heard_text, new_item_id
from kombain.streaming.responders import (
    Message,
    Notice,
    Reply,
    ReplyPiece,
    Responder,
    ResponderError,
    ResponseRequest,
    ServerTools,
    Tool,
)
from kombain.streaming.response_state import (
    Response,
    heard_ms,
    status_of,
    take,
    timings,
    usage,
)
from kombain.streaming.tool_runs import run_approved, run_tool_calls
from kombain.streaming.tts import SpeechStream, VoicePool

__all__ = ["APOLOGY", "ArgumentsDelta", "Conversation", "ConversationEvent", "ItemAdded", "ItemDone",
           "ResponseAudio", "ResponseFailed", "ResponseFinished", "ResponseNotice", "ResponseOptions",
           "ResponseStarted", "ResponseText", "ToolRunState", "TurnTiming"]

log = logging.getLogger("kombain.conversation")

APOLOGY = "Sorry, I can't answer that right now."
MAX_TOOL_ROUNDS = 4  # responses in a row that go on from a server-run tool's output


class Conversation:
    """One caller's dialogue: its items, the active response, barge-in."""

    def __init__(
        self,
        pool: VoicePool,
        responder: Responder,
        emit: Callable[[ConversationEvent], None],
        *,
        voice: str | None = None,
        rate: int = 24000,
        lead_s: float = 0.5,
        frame_ms: int = 100,
        instructions: str = "",
        clock: Callable[[], float] = time.monotonic,
        on_turn: Callable[[float], None] | None = None,
        on_barge_in: Callable[[float], None] | None = None,
        on_hold: Callable[[bool], None] | None = None,
    ) -> None:
        self.pool, self.responder, self._emit = pool, responder, emit
        self.voice, self.rate, self.lead_s, self.frame_ms = voice, rate, lead_s, frame_ms
        self.instructions = instructions
        self.interrupt = True
        # Session defaults a response may override.
        self.modalities: tuple[str, ...] = ("audio",)
        self.tools: tuple[Tool, ...] = ()
        self.tool_choice: str = "auto"
        self.tool_name: str | None = None
        self.max_output_tokens: int | None = None
        self.server_tools: ServerTools | None = None  # tools the server runs itself (MCP)
        self._clock = clock
        self._on_turn = on_turn or (lambda s: None)
        self._on_barge_in = on_barge_in or (lambda s: None)
        # Media transports pause what they already buffered while an interruption is confirmed.
        self._on_hold = on_hold or (lambda held: None)
        self.items = Items()
        self._active: Response | None = None
        self._task: asyncio.Task[None] | None = None
        self._hold: asyncio.Event = asyncio.Event()
        self._hold.set()  # set = sending allowed
        self._onset_at: float | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()
        self._final = False  # a goodbye is being said: nothing may supersede it
        self._noticed: set[str] = set()  # notices already given (each once per conversation)
        self.played_until = 0.0  # clock time the caller finishes hearing the last reply (estimate)

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                greeting = list(self.responder.start())  # e.g. an IVR welcome, and the nodes it leads to
                if greeting:
                    self._start(_replies(greeting), None)
                await self._stop.wait()
                self.cancel("session_closed")
        finally:
            self._tg = None
            with contextlib.suppress(Exception):
                await self.responder.aclose()

    def close(self) -> None:
        self._stop.set()

    @property
    def speaking(self) -> bool:
        return self._active is not None

    @property
    def history(self) -> list[Message]:
        """The messages so far as plain text (what was heard of each reply)."""
        return [Message(i.role or "user", i.text) for i in self.items if i.type == "message" and i.text]

    # --- items -----------------------------------------------------------------------------------

    def add_item(self, item: Item, previous_item_id: str | None = None) -> None:
        """A client's item (typed text, a function's output, a system note): added and done."""
        if item.type == "function_call_output" and self.items.function_call(item.call_id or "") is None:
            raise ItemError(f"no function_call with call_id {item.call_id!r} in the conversation",
                            "invalid_value", "item.call_id")
        if item.type == "mcp_approval_response" and not any(
                i.id == item.approval_request_id and i.type == "mcp_approval_request" for i in self.items):
            raise ItemError(f"no mcp_approval_request {item.approval_request_id!r} in the conversation",
                            "item_not_found", "item.approval_request_id")
        previous = self.items.add(item, previous_item_id)
        self._emit(ItemAdded(item.copy(), previous))
        self._emit(ItemDone(item.copy(), previous))

    def audio_committed(self, item_id: str) -> None:
        """The caller's audio turn became an item (its transcript follows)."""
        if item_id in self.items:
            return
        item = Item(item_id, "message", "user", [Part("input_audio", transcript=None)])
        previous = self.items.add(item)
        self._emit(ItemAdded(item.copy(), previous))
        self._emit(ItemDone(item.copy(), previous))

    def truncate(self, item_id: str, content_index: int, audio_end_ms: int) -> Item:
        item = self.items.truncate(item_id, content_index, audio_end_ms)
        resp = self._active
        if resp is not None and resp.message is item:  # still playing: the record stops here
            resp.client_heard_ms = audio_end_ms
        return item

    # --- inputs ----------------------------------------------------------------------------------

    def user_turn(self, item_id: str, transcript: str, timing: TurnTiming, respond: bool = True,
                  audio_ms: int = 0) -> None:
        said = transcript.strip()
        if item_id not in self.items and said:
            self.audio_committed(item_id)
        if item_id in self.items:
            item = self.items.get(item_id)
            for part in item.content:
                if part.type == "input_audio":
                    part.transcript, part.audio_ms = said, audio_ms
        if respond and said:
            self._start(None, timing)

    def create_response(self, instructions: str | None = None, say: str | None = None,
                        hangup: bool = False, options: ResponseOptions | None = None) -> str:
        """Client-initiated response: speak `say` verbatim, or ask the responder."""
        opts = options or ResponseOptions()
        if instructions is not None or say is not None or hangup:
            opts = replace(opts, instructions=instructions if instructions is not None else opts.instructions,
                           say=say if say is not None else opts.say, hangup=hangup or opts.hangup)
        source = _once(Reply(opts.say, hangup=opts.hangup)) if opts.say is not None else None
        return self._start(source, None, options=opts)

    def say_replies(self, replies: list[Reply], reason: str = "superseded", *, final: bool = False) -> str | None:
        """Speak these replies now (an IVR answering a key press), cutting off the current one.
        `final`: the call's last words (a goodbye): no turn, key or request cuts them off."""
        if not replies or self._final:
            return None
        self.cancel(reason)
        if final:
            self._final = True
            self.interrupt = False
            self.cancel(reason)
            return self._start(_replies(replies), None, force=True)
        return self._start(_replies(replies), None)

    def playback(self, response_id: str, position_ms: int) -> None:
        """What the caller has heard of a response, as the transport learned it (e.g. a mark)."""
        resp = self._active
        if resp is not None and resp.id == response_id and resp.cancel_reason is None:
            resp.played = (min(position_ms, resp.sent_ms), self._clock())

    def cancel(self, reason: str = "client_cancelled") -> bool:
        resp = self._active
        if resp is None or resp.cancel_reason is not None:
            return False
        resp.cancel_reason = reason
        resp.cancelled.set()
        return True

    def voice_onset(self, at: float) -> None:
        """First voiced frame of a possible interruption: hold output until it is confirmed or not."""
        if self._active is not None and self.interrupt and self._hold.is_set():
            self._set_hold(True)
            self._onset_at = at
            self._active.barge_in_s = max(0.0, self._clock() - at)

    def voice_onset_cleared(self) -> None:
        self._onset_at = None
        if self._active is not None:
            self._active.barge_in_s = None  # a blip, not an interruption
        self._set_hold(False)

    def speech_started(self, defer: bool = False) -> None:
        """The caller is speaking. Cancels the reply at once, or with `defer` keeps it held until
        the call confirms the interruption (`confirm_interruption`) or lets it go (`resume`)."""
        resp = self._active
        if resp is not None and self.interrupt and resp.cancel_reason is None:
            if defer:
                return  # stay held: a cough or an "uh-huh" must not cost the caller the reply
            self.confirm_interruption()
            return
        self._onset_at = None
        self._set_hold(False)

    def confirm_interruption(self) -> bool:
        """A real interruption: cancel the reply; what was heard is kept."""
        resp = self._active
        if resp is None or not self.interrupt or not self.cancel("turn_detected"):
            return False
        if resp.barge_in_s is None:  # no onset seen (e.g. turn detection just switched on)
            resp.barge_in_s = 0.0 if self._onset_at is None else max(0.0, self._clock() - self._onset_at)
        self._on_barge_in(resp.barge_in_s)
        self._onset_at = None
        return True  # stay held until the cancelled reply is flushed (_finish)

    def resume(self) -> None:
        """Not an interruption after all (a cough, a backchannel): the reply goes on where it was."""
        self.voice_onset_cleared()

    # --- the response ----------------------------------------------------------------------------

    def _request(self, opts: ResponseOptions) -> ResponseRequest:
        context = opts.input if opts.input is not None else tuple(i.copy() for i in self.items)
        tools = self.tools if opts.tools is None else opts.tools
        if self.server_tools is not None:
            tools = (*tools, *(t for t in self.server_tools.tools() if all(t.name != x.name for x in tools)))
        choice = opts.tool_choice or self.tool_choice
        return ResponseRequest(context, opts.instructions or self.instructions, tools, choice,
                               opts.tool_name if opts.tool_choice else self.tool_name,
                               opts.max_output_tokens or self.max_output_tokens)

    def _start(self, source: AsyncIterator[ReplyPiece] | None, timing: TurnTiming | None, force: bool = False,
               options: ResponseOptions | None = None, depth: int = 0) -> str:
        if self._tg is None:
            raise RuntimeError("Conversation.run() is not running")
        if self._final and not force:
            return ""  # saying goodbye: the call is ending
        opts = options or ResponseOptions()
        modalities = opts.modalities or self.modalities
        request = self._request(opts)
        asks = source is None
        if source is None:
            source = self.responder.respond(request)
        resp = Response("resp_" + secrets.token_hex(10), new_item_id(), source, timing, opts, modalities, request,
                        asks_responder=asks, depth=depth)
        if not opts.in_conversation and "audio" not in modalities:
            resp.side = True  # text out of band (a summary, a classification): the reply goes on
            self._tg.create_task(self._respond(resp, None))
            return resp.id
        self.cancel("superseded")
        previous = self._task
        self._task = self._tg.create_task(self._respond(resp, previous))
        return resp.id

    async def _respond(self, resp: Response, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait({previous})  # one response at a time, in order
        if resp.cancel_reason is not None:
            return
        if not resp.side:
            self._active = resp
            self._set_hold(False)
        self._emit(ResponseStarted(resp.id, resp.item_id, resp.options, resp.modalities))
        ran = False
        try:
            if resp.asks_responder and await run_approved(self, resp):  # the model answers from their output
                await aclose_quietly(resp.source)
                resp.request = self._request(resp.options)
                resp.source = self.responder.respond(resp.request)
            if resp.audio:
                await self._speak(resp)
            else:
                await self._write(resp)
            if resp.cancel_reason is None:
                ran = await run_tool_calls(self, resp)
        except Exception as exc:  # synthesis failure: report, keep the session
            log.warning("response %s failed: %r", resp.id, exc)
            resp.error = resp.error or f"{type(exc).__name__}: {exc}"
        finally:
            self._finish(resp)
        if ran and resp.cancel_reason is None and resp.options.in_conversation and resp.depth < MAX_TOOL_ROUNDS:
            # A tool the server ran answered: the model goes on from its output in a new response.
            self._start(None, None, options=replace(resp.options, say=None, hangup=False), depth=resp.depth + 1)

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
                self._emit(ResponseNotice(resp.id, piece.code, piece.message))
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
            self._emit(ResponseFailed(resp.id, "responder_failed", str(exc)))
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


async def _once(reply: Reply) -> AsyncIterator[Reply]:
    yield reply


async def _replies(replies: list[Reply]) -> AsyncIterator[Reply]:
    for i, reply in enumerate(replies):
        yield Reply(("" if i == 0 else " ") + reply.text, reply.hangup)
