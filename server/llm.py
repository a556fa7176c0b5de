"""The `openai` responder: any OpenAI-compatible chat completions endpoint (llama.cpp, vLLM,
Ollama, OpenAI), streamed, with the session's function tools passed through."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import ClassVar

import httpx

from kombain.server.chat_stream import ChatStream, chat_body
from kombain.streaming.responders import (
    Notice,
    Reply,
    ReplyEnd,
    ReplyPiece,
    Responder,
    ResponderError,
    ResponseRequest,
)

log = logging.getLogger("kombain.responder")

# Answers that mean "I do not take this request" rather than "I am broken": with tools in the
# request, the endpoint is asked again without them.
_REFUSED = frozenset({400, 404, 415, 422, 500, 501})


@dataclass
class OpenAIResponder(Responder):
    """Streams a reply from `POST {base_url}/chat/completions` with `stream: true`."""

    speculative: ClassVar[bool] = True  # a request is all it answers from: it may be asked at a pause
    base_url: str
    model: str
    api_key: str = ""
    system_prompt: str = "You are a helpful voice assistant. Answer briefly, in plain spoken sentences."
    timeout_s: float = 10.0
    max_history: int = 40  # items sent as context (the conversation keeps more)
    client: httpx.AsyncClient | None = None
    tools_supported: bool = True  # False once the endpoint refused a request with tools
    _own: httpx.AsyncClient | None = field(default=None, repr=False)

    def _client(self) -> httpx.AsyncClient:
        if self.client is not None:
            return self.client
        if self._own is None:  # one per session, so each turn reuses the connection
            self._own = httpx.AsyncClient()
        return self._own

    async def aclose(self) -> None:
        if self._own is not None:
            own, self._own = self._own, None
            await own.aclose()

    async def respond(self, request: ResponseRequest) -> AsyncIterator[ReplyPiece]:
        with_tools = bool(request.tools) and self.tools_supported
        async for piece in self._stream(request, with_tools):
            yield piece

    async def _stream(self, request: ResponseRequest, with_tools: bool, refused: str = "") -> AsyncIterator[ReplyPiece]:
        """One request; `refused`: why the same request with tools was refused (this is the retry)."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = chat_body(request, self.model, self.system_prompt, self.max_history, with_tools)
        url = self.base_url.rstrip("/") + "/chat/completions"
        # A deadline for each step (connect, each read), so a stalled endpoint is noticed quickly.
        timeout = httpx.Timeout(self.timeout_s, read=min(self.timeout_s, 5.0))
        folded = ChatStream()
        try:
            async with self._client().stream("POST", url, json=body, headers=headers, timeout=timeout) as resp:
                retry = ""
                if resp.status_code != 200:
                    detail = (await resp.aread())[:300].decode(errors="replace")
                    if not (with_tools and resp.status_code in _REFUSED):
                        raise ResponderError(f"chat endpoint answered HTTP {resp.status_code}: {detail}")
                    retry = f"HTTP {resp.status_code}: {detail}"
                else:
                    if refused:
                        # Without tools it answers: tools are what it refused. Say so once; no more tools.
                        self.tools_supported = False
                        log.info("chat endpoint %s refused a request with tools (%s); going on without tools",
                                 url, refused)
                        yield Notice("tools_unsupported", f"the chat endpoint behind this server cannot call "
                                     f"tools ({refused[:200]}); answering without them")
                    async for line in resp.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        if (text := folded.feed(line[5:].strip())):
                            yield Reply(text)
                        if folded.done:
                            break
        except httpx.HTTPError as exc:
            raise ResponderError(f"chat endpoint {url} failed: {type(exc).__name__}: {exc}") from None
        if retry:  # the same request without tools, once
            async for piece in self._stream(request, False, retry):
                yield piece
            return
        for call in folded.tool_calls():
            yield call
        incomplete = "max_output_tokens" if folded.finish_reason == "length" else None
        yield ReplyEnd(folded.usage, incomplete)
