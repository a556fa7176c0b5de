"""Speculative replies (streaming/speculation.py): a reply prepared at a pause shows nothing until its
turn ends with the same words, then its first audio leaves at once; dropped, it leaves no trace and
its responder request is closed. Fake voice and scripted responders, no models, no sockets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kombain.streaming.conversation import (
    Conversation,
    ItemAdded,
    ResponseAudio,
    ResponseFinished,
    ResponseNotice,
    ResponseStarted,
    TurnTiming,
)
from kombain.streaming.items import message
from kombain.streaming.responders import (
    EchoResponder,
    Notice,
    Reply,
    ReplyPiece,
    Responder,
    ResponseRequest,
)
from kombain.streaming.responders.ivr import ScriptResponder
from kombain.streaming.speculation import CHANGED, CLOSED, RESUMED, SUPERSEDED, USED
from tests.fakes.tts import FakeVoicePool

pytestmark = pytest.mark.asyncio


class Recording(Responder):
    """Echoes, optionally after a notice or a wait; records requests and whether each stream was closed."""

    speculative = True

    def __init__(self, *, wait: asyncio.Event | None = None, notice: bool = False) -> None:
        self.requests: list[ResponseRequest] = []
        self.closed: list[bool] = []
        self.wait, self.notice = wait, notice

    async def respond(self, request: ResponseRequest) -> AsyncIterator[ReplyPiece]:
        self.requests.append(request)
        index = len(self.closed)
        self.closed.append(False)
        try:
            if self.notice:
                yield Notice("slow_model", "the model is slow today")
            if self.wait is not None:
                await self.wait.wait()
            yield Reply(f"You said: {request.transcript}")
        finally:
            self.closed[index] = True


@contextlib.asynccontextmanager
async def running(responder: Responder) -> AsyncIterator[tuple[Conversation, list[Any], list[str]]]:
    events: list[Any] = []
    outcomes: list[str] = []
    conv = Conversation(FakeVoicePool(), responder, events.append, lead_s=5.0,  # type: ignore[arg-type]
                        on_speculation=outcomes.append)
    task = asyncio.ensure_future(conv.run())
    await asyncio.sleep(0)
    try:
        yield conv, events, outcomes
    finally:
        conv.close()
        await asyncio.wait_for(task, 5)


async def settle(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def turn(conv: Conversation, item_id: str, words: str) -> None:
    """The turn ends as the call ends it: committed (an item), then its final transcript."""
    conv.audio_committed(item_id)
    conv.user_turn(item_id, words, TurnTiming(0.0, 0.0, 0.0), audio_ms=1200)


async def test_a_prepared_reply_shows_nothing_until_its_turn_ends_then_its_audio_leaves_at_once() -> None:
    async with running(Recording()) as (conv, events, outcomes):
        assert conv.prepare("u1", "ten of clubs")
        await settle()
        assert events == []  # synthesised and waiting, unseen
        assert len(conv.pool.streams) == 1 and conv.pool.streams[0].pushed == ["You said: ten of clubs"]
        turn(conv, "u1", "ten of clubs")
        await settle(3)  # the first frame is already made: it leaves in the next loop passes
        kinds = [type(e) for e in events]
        assert ResponseAudio in kinds
        assert kinds.index(ResponseStarted) < kinds.index(ResponseAudio)
        done = [e for e in events if isinstance(e, ResponseFinished)]
        while not done:
            await asyncio.sleep(0.01)
            done = [e for e in events if isinstance(e, ResponseFinished)]
    assert done[0].status == "completed" and done[0].transcript == "You said: ten of clubs"
    assert outcomes == [USED] and len(conv.responder.requests) == 1  # type: ignore[attr-defined]
    # The user's turn comes before the reply in the conversation, as without speculation.
    assert [i.role for i in conv.items] == ["user", "assistant"]
    added = [e.item.id for e in events if isinstance(e, ItemAdded)]
    assert added[0] == "u1"


async def test_a_dropped_reply_leaves_no_trace_and_closes_its_request() -> None:
    gate = asyncio.Event()
    responder = Recording(wait=gate)
    async with running(responder) as (conv, events, outcomes):
        assert conv.prepare("u1", "go forward")
        await settle()
        assert responder.closed == [False]  # the request is open (an LLM thinking)
        conv.drop_prepared(RESUMED)  # the caller went on
        await settle()
        assert responder.closed == [True]
        turn(conv, "u1", "go forward ten meters")
        done = None
        while done is None:
            await asyncio.sleep(0.01)
            gate.set()
            done = next((e for e in events if isinstance(e, ResponseFinished)), None)
    assert outcomes == [RESUMED]
    started = [e for e in events if isinstance(e, ResponseStarted)]
    assert len(started) == 1 and started[0].response_id == done.response_id  # only the real reply shows
    assert done.transcript == "You said: go forward ten meters"


async def test_other_words_or_a_changed_conversation_make_the_reply_again() -> None:
    responder = Recording()
    async with running(responder) as (conv, events, outcomes):
        conv.prepare("u1", "four queen")
        await settle()
        turn(conv, "u1", "four queen of clubs")  # the final heard more than the pause's decode
        first = None
        while first is None:
            await asyncio.sleep(0.01)
            first = next((e for e in events if isinstance(e, ResponseFinished)), None)
        assert first.transcript == "You said: four queen of clubs"
        conv.prepare("u2", "hello")
        await settle()
        conv.add_item(message("user", "typed meanwhile"))  # the context the reply was made for changed
        turn(conv, "u2", "hello")
        while len([e for e in events if isinstance(e, ResponseFinished)]) < 2:
            await asyncio.sleep(0.01)
    assert outcomes == [CHANGED, CHANGED]
    assert len([e for e in events if isinstance(e, ResponseStarted)]) == 2
    assert [r.transcript for r in responder.requests] == ["four queen", "four queen of clubs", "hello", "hello"]


async def test_what_it_noticed_while_prepared_follows_its_response_created() -> None:
    async with running(Recording(notice=True)) as (conv, events, outcomes):
        conv.prepare("u1", "eight of spades")
        await settle()
        assert events == []
        turn(conv, "u1", "eight of spades")
        while not any(isinstance(e, ResponseFinished) for e in events):
            await asyncio.sleep(0.01)
    kinds = [type(e) for e in events]
    assert kinds.index(ResponseStarted) < kinds.index(ResponseNotice) < kinds.index(ResponseAudio)
    assert outcomes == [USED]


async def test_a_script_is_never_asked_early_and_a_closing_call_drops_the_reply() -> None:
    script = ScriptResponder.__new__(ScriptResponder)  # speculative is a class attribute
    assert not script.speculative and EchoResponder.speculative
    async with running(Recording(wait=asyncio.Event())) as (conv, events, outcomes):
        assert conv.prepare("u1", "five")
        await settle()
    assert events == [] and outcomes == [CLOSED]


async def test_a_response_asked_for_meanwhile_supersedes_the_prepared_one() -> None:
    async with running(Recording()) as (conv, events, outcomes):
        conv.prepare("u1", "five")
        await settle()
        conv.create_response(say="One moment please.")
        while not any(isinstance(e, ResponseFinished) for e in events):
            await asyncio.sleep(0.01)
        turn(conv, "u1", "five")  # no prepared reply any more: it is made now
        while len([e for e in events if isinstance(e, ResponseFinished)]) < 2:
            await asyncio.sleep(0.01)
    assert outcomes == [SUPERSEDED]
    done = [e for e in events if isinstance(e, ResponseFinished)]
    assert [d.transcript for d in done] == ["One moment please.", "You said: five"]
