"""Wyoming `handle`: a `transcript` sent to this node gets the configured responder's answer,
streamed (`handled-start`, `handled-chunk`..., then `handled` with the whole text, `handled-stop`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable

from kombain.server.transports.wyoming.protocol import encode
from kombain.streaming.responders import Message, Reply, Responder, ResponseRequest

HISTORY = 20  # messages of one connection's conversation kept as context


class Conversation:
    """One connection's exchanges with its responder (built once, so a script keeps its state)."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.history: deque[Message] = deque(maxlen=HISTORY)

    async def answer(self, text: str, send: Callable[[bytes], Awaitable[None]]) -> str:
        """Stream the reply to `text`; returns it whole."""
        await send(encode("handled-start"))
        parts: list[str] = []
        async for piece in self.responder.respond(ResponseRequest.of_text(text, list(self.history))):
            if isinstance(piece, Reply) and piece.text.strip():
                chunk = piece.text.strip() if not parts else " " + piece.text.strip()
                parts.append(chunk)
                await send(encode("handled-chunk", {"text": chunk}))
        reply = "".join(parts)
        self.history.extend([Message("user", text), Message("assistant", reply)])
        await send(encode("handled", {"text": reply}) + encode("handled-stop"))
        return reply
