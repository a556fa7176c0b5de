"""Small asyncio helpers for the conversation: wait for either of two things, iterate until told."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


async def either(a: Awaitable[object], b: Awaitable[object]) -> None:
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


async def until(stream: AsyncIterable[T], stop: asyncio.Event) -> AsyncIterator[T]:
    """Iterate a stream, ending early once `stop` is set."""
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


async def aclose_quietly(source: object) -> None:
    """Close an async generator now (e.g. an LLM stream cut by barge-in releases its connection)."""
    aclose = getattr(source, "aclose", None)  # a plain async iterator has none
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
