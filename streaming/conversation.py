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
from kombain.streaming.items import Item, ItemError, Items, Part, new_item_id
from kombain.streaming.reply_runner import APOLOGY, MAX_TOOL_ROUNDS, ReplyRunner
from kombain.streaming.responders import (
    Message,
    Reply,
    ReplyPiece,
    Responder,
    ResponseRequest,
    ServerTools,
    Tool,
)
from kombain.streaming.response_state import Response
from kombain.streaming.speculation import (
    CLOSED,
    SUPERSEDED,
    USED,
    Prepared,
    context_of,
    tentative_request,
)
from kombain.streaming.tts import VoicePool

__all__ = ["APOLOGY", "MAX_TOOL_ROUNDS", "ArgumentsDelta", "Conversation", "ConversationEvent", "ItemAdded",
           "ItemDone", "ResponseAudio", "ResponseFailed", "ResponseFinished", "ResponseNotice", "ResponseOptions",
           "ResponseStarted", "ResponseText", "ToolRunState", "TurnTiming"]

log = logging.getLogger("kombain.conversation")


class Conversation(ReplyRunner):
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
        on_speculation: Callable[[str], None] | None = None,
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
        self.speculate = True  # replies may be prepared at a pause (streaming/speculation.py)
        self._prepared: Prepared | None = None
        self._on_speculation = on_speculation or (lambda outcome: None)
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
                self.drop_prepared(CLOSED)
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
            if not self._release_prepared(item_id, said, timing):
                self._start(None, timing)
        elif self._prepared is not None and self._prepared.item_id == item_id:
            self.drop_prepared(SUPERSEDED)  # the turn needs no answer

    def prepare(self, item_id: str, words: str) -> bool:
        """The caller paused after `words` (turn `item_id`, not ended yet): make the reply now,
        unseen, for `user_turn` to release if the turn ends with these words (speculation.py)."""
        self.drop_prepared(SUPERSEDED)
        said = words.strip()
        if (not self.speculate or not said or self._tg is None or self._final or self._active is not None
                or (self._task is not None and not self._task.done()) or not self.responder.speculative):
            return False
        opts = ResponseOptions()
        request = tentative_request(self._request(opts), item_id, said)
        resp = Response("resp_" + secrets.token_hex(10), new_item_id(), self.responder.respond(request), None,
                        opts, self.modalities, request, asks_responder=True)
        resp.released.clear()
        task = self._tg.create_task(self._respond(resp, None))
        self._prepared = Prepared(resp, task, item_id, said, context_of(self.items, item_id))
        return True

    def drop_prepared(self, outcome: str) -> None:
        """Throw the prepared reply away unseen (its responder request is cancelled)."""
        prepared, self._prepared = self._prepared, None
        if prepared is not None:
            prepared.resp.cancel_reason = prepared.resp.cancel_reason or "speculation_dropped"
            prepared.resp.cancelled.set()
            self._on_speculation(outcome)

    def _release_prepared(self, item_id: str, said: str, timing: TurnTiming) -> bool:
        """The turn ended: its prepared reply, if it answers these words, goes out now."""
        prepared = self._prepared
        if prepared is None:
            return False
        why = prepared.mismatch(item_id, said, self.items)
        if why is not None or self._final or (self._task is not None and not self._task.done()):
            self.drop_prepared(why or SUPERSEDED)
            return False
        self._prepared = None
        resp = prepared.resp
        resp.timing = timing
        resp.request = self._request(resp.options)  # the context as it reads now (for usage)
        if resp.first_text_at is not None:  # the responder's time was spent during the silence
            resp.first_text_at = max(resp.first_text_at, self._clock())
        self._task = prepared.task
        self._show(resp)
        resp.released.set()
        self._on_speculation(USED)
        return True

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
        self.drop_prepared(SUPERSEDED)
        self.cancel("superseded")
        previous = self._task
        self._task = self._tg.create_task(self._respond(resp, previous))
        return resp.id


async def _once(reply: Reply) -> AsyncIterator[Reply]:
    yield reply


async def _replies(replies: list[Reply]) -> AsyncIterator[Reply]:
    for i, reply in enumerate(replies):
        yield Reply(("" if i == 0 else " ") + reply.text, reply.hangup)
