"""Turn-taking: after each user turn a responder's reply is synthesised and sent, paced to real
time, and stopped at once when the caller barges in. Transport-agnostic: events go to `emit`.

Pacing keeps at most `lead_s` of audio ahead of the caller's (estimated) playhead, so the server
knows what was heard. Barge-in is two-step: at the first voiced frame (`voice_onset`) sending is
held; if the endpointer confirms speech (`speech_started`) the reply is cancelled and the record
truncated to what was heard; if it was a blip (`voice_onset_cleared`) sending resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kombain.streaming.responders import Message, Reply, Responder, ResponderError
from kombain.streaming.tts import SpeechStream, VoicePool

log = logging.getLogger("kombain.conversation")

APOLOGY = "Sorry, I can't answer that right now."


@dataclass(frozen=True, slots=True)
class TurnTiming:
    """Clock times of one user turn, for the `turn` latency and its parts."""

    speech_end_at: float  # the last voiced sample arrived
    decided_at: float  # the endpointer ended the turn
    final_at: float  # the final transcript was sent


@dataclass(frozen=True, slots=True)
class ResponseStarted:
    response_id: str
    item_id: str


@dataclass(frozen=True, slots=True)
class ResponseAudio:
    response_id: str
    item_id: str
    pcm: bytes  # PCM16 LE mono at the conversation's rate
    end_ms: int = 0  # position in the response at the end of this chunk (for playback reports)


@dataclass(frozen=True, slots=True)
class ResponseText:
    response_id: str
    item_id: str
    text: str  # the clause whose audio starts now


@dataclass(frozen=True, slots=True)
class ResponseFinished:
    response_id: str
    item_id: str
    status: str  # completed | cancelled | failed
    reason: str | None  # turn_detected | client_cancelled | error
    transcript: str  # what the caller heard (all of it when completed)
    audio_sent_ms: int
    audio_heard_ms: int
    timings_ms: dict[str, float]
    hangup: bool = False


@dataclass(frozen=True, slots=True)
class ResponseFailed:
    response_id: str
    code: str
    message: str


ConversationEvent = ResponseStarted | ResponseAudio | ResponseText | ResponseFinished | ResponseFailed


@dataclass
class _Response:
    id: str
    item_id: str
    source: AsyncIterator[Reply]
    timing: TurnTiming | None
    cancel_reason: str | None = None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    chunks: list[tuple[str, int, int]] = field(default_factory=list)  # (text, start_ms, end_ms)
    sent_ms: int = 0
    play_end: float = 0.0  # estimated clock time the caller finishes playing what was sent
    first_text_at: float | None = None
    first_audio_at: float | None = None
    hangup: bool = False
    error: str | None = None
    barge_in_s: float | None = None  # interruption's first voiced sample -> output held
    played: tuple[int, float] | None = None  # the transport's last playback report: (ms heard, clock)


class Conversation:
    """One caller's dialogue: history, the active response, barge-in."""

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
        self._clock = clock
        self._on_turn = on_turn or (lambda s: None)
        self._on_barge_in = on_barge_in or (lambda s: None)
        # Media transports pause what they already buffered while an interruption is confirmed.
        self._on_hold = on_hold or (lambda held: None)
        self.history: list[Message] = []
        self._active: _Response | None = None
        self._task: asyncio.Task[None] | None = None
        self._hold: asyncio.Event = asyncio.Event()
        self._hold.set()  # set = sending allowed
        self._onset_at: float | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()
        self._final = False  # a goodbye is being said: nothing may supersede it
        self.played_until = 0.0  # clock time the caller finishes hearing the last reply (estimate)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            greeting = list(self.responder.start())  # e.g. an IVR welcome, and the nodes it leads to
            if greeting:
                self._start(_replies(greeting), None)
            await self._stop.wait()
            self.cancel("session_closed")
        self._tg = None

    def close(self) -> None:
        self._stop.set()

    @property
    def speaking(self) -> bool:
        return self._active is not None

    # --- inputs ----------------------------------------------------------------------------------

    def user_turn(self, item_id: str, transcript: str, timing: TurnTiming, respond: bool = True) -> None:
        if transcript.strip():
            self.history.append(Message("user", transcript.strip()))
        if respond and transcript.strip():
            source = self.responder.respond(transcript, self.history[:-1], self.instructions)
            self._start(source, timing)

    def create_response(self, instructions: str | None = None, say: str | None = None,
                        hangup: bool = False) -> str:
        """Client-initiated response: speak `say` verbatim, or ask the responder (last user turn)."""
        if say is not None:
            source: AsyncIterator[Reply] = _once(Reply(say, hangup=hangup))
        else:
            last = next((m.content for m in reversed(self.history) if m.role == "user"), "")
            source = self.responder.respond(last, self.history[:-1], instructions or self.instructions)
        return self._start(source, None)

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

    def _start(self, source: AsyncIterator[Reply], timing: TurnTiming | None, force: bool = False) -> str:
        if self._tg is None:
            raise RuntimeError("Conversation.run() is not running")
        if self._final and not force:
            return ""  # saying goodbye: the call is ending
        self.cancel("superseded")
        resp = _Response("resp_" + secrets.token_hex(10), "item_" + secrets.token_hex(10), source, timing)
        previous = self._task
        self._task = self._tg.create_task(self._respond(resp, previous))
        return resp.id

    async def _respond(self, resp: _Response, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait({previous})  # one response at a time, in order
        if resp.cancel_reason is not None:
            return
        self._active = resp
        self._set_hold(False)
        self._emit(ResponseStarted(resp.id, resp.item_id))
        stream = self.pool.stream(self.voice, self.rate)
        feeder = asyncio.ensure_future(self._feed(resp, stream))
        try:
            async for chunk in _until(stream, resp.cancelled):
                await self._play(resp, chunk.text, chunk.pcm)
                if resp.cancel_reason is not None:
                    break
            if resp.cancel_reason is None:
                await feeder  # surfaces responder errors (already spoken as an apology)
        except Exception as exc:  # synthesis failure: report, keep the session
            log.warning("response %s failed: %r", resp.id, exc)
            resp.error = resp.error or f"{type(exc).__name__}: {exc}"
        finally:
            stream.cancel()
            feeder.cancel()
            self._finish(resp)

    async def _feed(self, resp: _Response, stream: SpeechStream) -> None:
        try:
            async for reply in resp.source:
                if resp.first_text_at is None and reply.text.strip():
                    resp.first_text_at = self._clock()
                if reply.text:
                    stream.push_text(reply.text)
                if reply.hangup:
                    resp.hangup = True
                    break
        except ResponderError as exc:
            resp.error = str(exc)
            self._emit(ResponseFailed(resp.id, "responder_failed", str(exc)))
            stream.push_text(("" if resp.first_text_at is None else " ") + APOLOGY)
        finally:
            if not stream.closed:
                stream.end_input()
            aclose = getattr(resp.source, "aclose", None)
            if aclose is not None:  # e.g. an LLM stream cut by barge-in: release its connection now
                with contextlib.suppress(Exception):
                    await aclose()

    async def _play(self, resp: _Response, text: str, pcm: bytes) -> None:
        frame = self.rate * self.frame_ms // 1000 * 2
        start_ms = resp.sent_ms
        first = True
        for i in range(0, len(pcm), frame):
            # Wait while too far ahead of the caller, or while an interruption is being confirmed.
            while True:
                if resp.cancel_reason is not None:
                    if not first:  # cut mid-clause: keep its whole length, so heard words scale
                        full_ms = round(len(pcm) / 2 / self.rate * 1000)
                        resp.chunks.append((text, start_ms, start_ms + full_ms))
                    return
                if not self._hold.is_set():
                    await _either(self._hold.wait(), resp.cancelled.wait())
                    continue
                ahead = resp.play_end - self._clock()
                if ahead <= self.lead_s:
                    break
                await _either(asyncio.sleep(ahead - self.lead_s), resp.cancelled.wait())
            piece = pcm[i : i + frame]
            now = self._clock()
            if first:
                self._emit(ResponseText(resp.id, resp.item_id, text if not resp.chunks else " " + text))
                first = False
            if resp.first_audio_at is None:
                resp.first_audio_at = now
                if resp.timing is not None:
                    self._on_turn(now - resp.timing.speech_end_at)
            dur = len(piece) / 2 / self.rate
            resp.play_end = max(resp.play_end, now) + dur
            resp.sent_ms += round(dur * 1000)
            self._emit(ResponseAudio(resp.id, resp.item_id, piece, resp.sent_ms))
        resp.chunks.append((text, start_ms, resp.sent_ms))

    def _finish(self, resp: _Response) -> None:
        now = self._clock()
        self.played_until = now if resp.cancel_reason is not None else max(now, resp.play_end)
        heard_ms = _heard_ms(resp, now)
        cancelled = resp.cancel_reason is not None
        heard = _heard_text(resp.chunks, heard_ms if cancelled else resp.sent_ms)
        if heard:
            self.history.append(Message("assistant", heard))
        status = "cancelled" if cancelled else ("failed" if resp.error and not resp.chunks else "completed")
        self._emit(ResponseFinished(
            resp.id, resp.item_id, status, resp.cancel_reason or ("error" if resp.error else None), heard,
            resp.sent_ms, heard_ms if cancelled else resp.sent_ms, _timings(resp), resp.hangup and not cancelled,
        ))
        if self._active is resp:
            self._active = None
        self._set_hold(False)

    def _set_hold(self, held: bool) -> None:
        if held == (not self._hold.is_set()):
            return
        if held:
            self._hold.clear()
        else:
            self._hold.set()
        self._on_hold(held)


def _heard_ms(resp: _Response, now: float) -> int:
    """How much of a response the caller heard. A transport's playback report is the truth as of
    when it came (plus the time since, while audio was still queued); without one, the estimate
    from pacing (sent minus what is still ahead of the caller's playhead)."""
    estimate = max(0, resp.sent_ms - round(max(0.0, resp.play_end - now) * 1000))
    if resp.played is None:
        return estimate
    pos, at = resp.played
    return min(resp.sent_ms, pos + round((now - at) * 1000), max(pos, estimate))


def _heard_text(chunks: Iterable[tuple[str, int, int]], heard_ms: int) -> str:
    words: list[str] = []
    for text, start, end in chunks:
        if end <= heard_ms:
            words += text.split()
        elif start < heard_ms:
            part = text.split()
            words += part[: int(len(part) * (heard_ms - start) / max(1, end - start))]
            break
    return " ".join(words)


def _timings(resp: _Response) -> dict[str, float]:
    t = resp.timing
    out: dict[str, float] = {}
    if t is not None and resp.first_audio_at is not None:
        out = {"silence_wait": t.decided_at - t.speech_end_at, "stt": t.final_at - t.decided_at,
               "turn": resp.first_audio_at - t.speech_end_at}
        if resp.first_text_at is not None:
            out["responder"] = resp.first_text_at - t.final_at
            out["tts"] = resp.first_audio_at - resp.first_text_at
    if resp.cancel_reason == "turn_detected" and resp.barge_in_s is not None:
        out["barge_in"] = resp.barge_in_s
    return {k: round(v * 1000, 1) for k, v in out.items()}


async def _once(reply: Reply) -> AsyncIterator[Reply]:
    yield reply


async def _replies(replies: list[Reply]) -> AsyncIterator[Reply]:
    for i, reply in enumerate(replies):
        yield Reply(("" if i == 0 else " ") + reply.text, reply.hangup)


async def _either(a: Awaitable[object], b: Awaitable[object]) -> None:
    """Wait for whichever of two awaitables finishes first; cancel the other."""
    tasks = {asyncio.ensure_future(a), asyncio.ensure_future(b)}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def _until(stream: SpeechStream, stop: asyncio.Event) -> AsyncIterator:  # type: ignore[type-arg]
    """Iterate a speech stream, ending early once `stop` is set."""
    it = stream.__aiter__()
    while not stop.is_set():
        nxt = asyncio.ensure_future(it.__anext__())
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({nxt, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            # Cancelled while waiting (barge-in cancels the response): `nxt` must not outlive us,
            # or its StopAsyncIteration, once the stream closes, is logged as never retrieved.
            nxt.add_done_callback(_retrieve)
            if not nxt.done():
                nxt.cancel()
        if not nxt.done():
            nxt.cancel()
            return
        try:
            yield nxt.result()
        except StopAsyncIteration:
            return
