"""Bounded request bodies: an HTTP body is refused with 413 as soon as it passes the limit.

A handler that parses a multipart form or reads `request.body()` pulls the whole body before it
can look at its size; a chunked upload (no Content-Length) of 100 MiB was read whole to refuse it.
This ASGI middleware counts the bytes each request's `receive` hands over and, past the limit,
raises `BodyTooLarge` from it: whatever the handler was doing with the body stops there, and
whatever it answers instead (a 400 for a broken form, say) is replaced by the 413. The answer
carries `Connection: close`, so the server stops reading the rest.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kombain.server.errors import ApiError

log = logging.getLogger("kombain.http")

FORM_OVERHEAD = 64 * 1024  # multipart boundaries and small fields beside an upload of the limit


class BodyTooLarge(ApiError):
    """The request body passed the server's limit (raised from `receive`)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes", "request_too_large",
                         headers={"Connection": "close"})


class BodyLimit:
    """ASGI middleware: at most `limit` body bytes per HTTP request, counted as they arrive."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit
        received = 0
        tripped: BodyTooLarge | None = None
        started = False

        async def counted() -> Message:
            nonlocal received, tripped
            if tripped is not None:  # a handler that caught it and reads on gets it again
                raise tripped
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    tripped = BodyTooLarge(limit)
                    raise tripped
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if tripped is not None and not started:
                return  # the handler's own answer to the error it saw; the 413 goes instead
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except BodyTooLarge:
            if tripped is None:
                raise
        if tripped is not None:
            if started:  # the handler had answered before it read on: nothing to replace
                return
            log.info("%s %s: body refused past %d bytes", scope.get("method"), scope.get("path"), limit)
            await tripped.response()(scope, receive, send)
