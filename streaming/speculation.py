"""Speculative replies: a reply prepared at the first pause that could end the turn, released the
moment the turn ends with the same words.

At a pause the transcriber decodes the turn so far (its speculative decode) and reports the words
(`on_tentative`). The conversation starts the reply to them at once (the responder's request,
the synthesis of the first clause) but keeps it unseen: no event, no item and no audio leaves it
(`Response.released` is clear; its events wait in `Response.held`). When the turn ends with the
same words and nothing else changed in the conversation, the reply is released and its first
audio, already synthesised, goes out at once. When the caller goes on, the words come out
different, the buffer is cleared, another response starts or the call ends, it is dropped: its
responder request is cancelled (an LLM stream is closed) and the waste is counted
(`kombain_speculative_replies_total{outcome}`).

Only responders whose answer depends on nothing but the request may be asked early
(`Responder.speculative`): an IVR script moves on when it is asked, so it never is.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from kombain.streaming.items import Item, Items, Part
from kombain.streaming.responders import ResponseRequest
from kombain.streaming.response_state import Response

# Outcomes counted: the reply was used, or why it was dropped.
USED = "used"
RESUMED = "speech_resumed"  # the caller went on after the pause
CHANGED = "changed"  # the turn ended with other words, or the conversation changed meanwhile
SUPERSEDED = "superseded"  # another response started, or the turn needs no answer
CLOSED = "closed"  # the call ended
FAILED = "failed"  # the prepared reply failed before it was released (it is made again)
OUTCOMES = (USED, RESUMED, CHANGED, SUPERSEDED, CLOSED, FAILED)


@dataclass(slots=True)
class Prepared:
    """A reply made for a turn that has not ended yet."""

    resp: Response
    task: asyncio.Task[None]
    item_id: str  # the caller's turn it answers
    words: str  # the words it answers
    context: tuple[str, ...]  # the conversation's items when it was prepared (the turn's own left out)

    def mismatch(self, item_id: str, words: str, items: Items) -> str | None:
        """None when this reply answers the turn as it ended; else the outcome to count."""
        if self.task.done() or self.resp.cancel_reason is not None:
            return FAILED
        if item_id != self.item_id or words.strip() != self.words or context_of(items, item_id) != self.context:
            return CHANGED
        return None


def context_of(items: Items, item_id: str) -> tuple[str, ...]:
    """The ids of the conversation's items, but the turn's own (it is added when the turn ends)."""
    return tuple(i.id for i in items if i.id != item_id)


def tentative_request(request: ResponseRequest, item_id: str, words: str) -> ResponseRequest:
    """`request` as it will read once the turn is an item with these words."""
    turn = Item(item_id, "message", "user", [Part("input_audio", transcript=words)])
    return replace(request, items=(*(i for i in request.items if i.id != item_id), turn))
