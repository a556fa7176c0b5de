"""The echo responder: says back what it heard (a fresh install is a working demo)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from kombain.streaming.responders.base import Reply, Responder, ResponseRequest
from kombain.streaming.responders.ivr import KEY_WORDS, key_of


class EchoResponder(Responder):
    """Repeats the last user message, typed or spoken; after a tool ran, says what it returned."""

    speculative = True

    async def respond(self, request: ResponseRequest) -> AsyncIterator[Reply]:
        last = request.last
        if last is not None and last.type == "function_call_output":
            if (output := (last.output or "").strip()):
                yield Reply(f"The tool returned: {output[:500]}")
            return
        if (said := request.transcript.strip()):
            yield Reply(f"You said: {said}")

    def dtmf(self, digit: str, now: float) -> Sequence[Reply] | None:
        key = key_of(digit)
        return None if key is None else [Reply(f"You pressed {KEY_WORDS.get(key, key)}.")]
