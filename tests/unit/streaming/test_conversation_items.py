"""Conversation with a fake voice and scripted responders: items, text-only and out-of-band
responses, tool calls, usage, token limits and failures (no models, no sockets)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kombain.streaming.conversation import (
    ArgumentsDelta,
    Conversation,
    ItemAdded,
    ItemDone,
    ResponseFinished,
    ResponseOptions,
    ResponseText,
    TurnTiming,
)
from kombain.streaming.items import Item, ItemError, message
from kombain.streaming.responders import (
    EchoResponder,
    Reply,
    ReplyEnd,
    ReplyPiece,
    Responder,
    ResponderError,
    ResponseRequest,
    ToolCall,
    Usage,
)
from tests.fakes.tts import FakeVoicePool

pytestmark = pytest.mark.asyncio


class Scripted(Responder):
    """Answers each request with the next script entry; records what it was asked."""

    def __init__(self, *script: list[ReplyPiece] | Exception) -> None:
        self.script = list(script)
        self.requests: list[ResponseRequest] = []

    async def respond(self, request: ResponseRequest) -> AsyncIterator[ReplyPiece]:
        self.requests.append(request)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        for piece in step:
            yield piece


@contextlib.asynccontextmanager
async def running(responder: Responder) -> AsyncIterator[tuple[Conversation, list[Any]]]:
    events: list[Any] = []
    conv = Conversation(FakeVoicePool(), responder, events.append, lead_s=5.0)  # type: ignore[arg-type]
    task = asyncio.ensure_future(conv.run())
    await asyncio.sleep(0)
    try:
        yield conv, events
    finally:
        conv.close()
        await asyncio.wait_for(task, 5)


async def finished(events: list[Any], count: int = 1) -> list[ResponseFinished]:
    async with asyncio.timeout(5):
        while len(done := [e for e in events if isinstance(e, ResponseFinished)]) < count:
            await asyncio.sleep(0.01)
    return done


async def test_typed_and_spoken_turns_are_one_conversation() -> None:
    async with running(EchoResponder()) as (conv, events):
        conv.add_item(message("user", "typed first", "u1"))
        conv.audio_committed("u2")
        conv.user_turn("u2", "then spoken", TurnTiming(0, 0, 0), respond=False)
        conv.create_response(options=ResponseOptions(modalities=("text",)))
        done = (await finished(events))[0]
    assert done.status == "completed" and done.output[0].content[0].text == "You said: then spoken"
    assert [i.id for i in conv.items][:2] == ["u1", "u2"]
    assert conv.history[-1].content == "You said: then spoken"
    added = [e for e in events if isinstance(e, ItemAdded)]
    assert [e.response_id is None for e in added] == [True, True, False]


async def test_tool_calls_become_items_and_their_output_is_answered() -> None:
    llm = Scripted([Reply("Let me look."), ToolCall("get_weather", '{"city": "Oslo"}', "call_1"),
                    ToolCall("get_time", "{}"), ReplyEnd(Usage(40, 12, 8))],
                   [Reply("It is sunny.")])
    async with running(llm) as (conv, events):
        conv.add_item(message("user", "weather?"))
        conv.create_response(options=ResponseOptions(modalities=("text",)))
        first = (await finished(events))[0]
        calls = [i for i in first.output if i.type == "function_call"]
        assert [(c.name, c.call_id) for c in calls][:1] == [("get_weather", "call_1")]
        assert calls[1].call_id and calls[1].call_id.startswith("call_")
        assert first.output[0].type == "message"  # the words before the calls come first
        assert first.usage["input_tokens"] == 40 and first.usage["input_token_details"]["cached_tokens"] == 8
        deltas = [e for e in events if isinstance(e, ArgumentsDelta)]
        assert [d.output_index for d in deltas] == [1, 2] and deltas[0].delta == '{"city": "Oslo"}'
        with pytest.raises(ItemError):  # an output for a call nobody made
            conv.add_item(_output("call_nope", "x"))
        conv.add_item(_output("call_1", "sunny"))
        conv.create_response(options=ResponseOptions(modalities=("text",)))
        second = (await finished(events, 2))[1]
    assert second.output[0].content[0].text == "It is sunny."
    seen = [i.type for i in llm.requests[1].items]
    assert seen == ["message", "message", "function_call", "function_call", "function_call_output"]


def _output(call_id: str, output: str) -> Item:
    return Item("o_" + call_id, "function_call_output", call_id=call_id, output=output)


async def test_out_of_band_text_runs_beside_the_reply_and_leaves_the_conversation_alone() -> None:
    async with running(EchoResponder()) as (conv, events):
        conv.add_item(message("user", "a long reply please"))
        spoken = conv.create_response()
        await asyncio.sleep(0.05)
        side = conv.create_response(options=ResponseOptions(
            modalities=("text",), in_conversation=False, input=(message("user", "summary"),), metadata={"k": "v"}))
        done = {e.response_id: e for e in await finished(events, 2)}
    assert done[side].status == "completed" and done[side].options.metadata == {"k": "v"}
    assert done[side].output[0].content[0].text == "You said: summary"
    assert done[spoken].status == "completed"  # not superseded by the side response
    assert all(i.text != "You said: summary" for i in conv.items)
    side_items = [e for e in events if isinstance(e, ItemAdded | ItemDone) and e.response_id == side]
    assert side_items and not any(e.in_conversation for e in side_items)


async def test_max_output_tokens_cuts_the_reply_and_failures_fail_it() -> None:
    llm = Scripted([Reply("one two three four five six")], ResponderError("endpoint down"))
    async with running(llm) as (conv, events):
        conv.add_item(message("user", "talk"))
        conv.create_response(options=ResponseOptions(modalities=("text",), max_output_tokens=2))
        cut = (await finished(events))[0]
        assert (cut.status, cut.reason) == ("incomplete", "max_output_tokens")
        assert cut.output[0].content[0].text == "one two "
        conv.create_response()  # spoken: the apology is said, the response still failed
        failed = (await finished(events, 2))[1]
    assert failed.status == "failed" and failed.error == "endpoint down"
    assert "Sorry" in failed.transcript
    texts = [e.text for e in events if isinstance(e, ResponseText) and e.response_id == failed.response_id]
    assert texts and all(e.audio for e in events if isinstance(e, ResponseText) and e.response_id == failed.response_id)


async def test_truncate_while_playing_and_after() -> None:
    async with running(EchoResponder()) as (conv, events):
        conv.add_item(message("user", "one two three four five six seven eight"))
        conv.create_response()
        done = (await finished(events))[0]
        item = conv.items.get(done.item_id)
        cut = conv.truncate(done.item_id, 0, done.audio_sent_ms // 2)
        assert cut is item and 0 < len(item.text) < len(done.transcript)
        with pytest.raises(ItemError) as err:
            conv.truncate(done.item_id, 0, done.audio_sent_ms + 1)
    assert err.value.param == "audio_end_ms"
