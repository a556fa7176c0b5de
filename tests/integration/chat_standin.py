"""A tiny OpenAI-compatible chat completions server (streaming), standing in for llama.cpp/vLLM.

Scripted: asked about the weather with tools offered (or `tool_choice` forcing one), it calls the
first tool, streaming `tool_calls` deltas as OpenAI does (one call per city: "weather in Oslo and
Paris" is two calls); after a `tool` message it answers from the tool outputs; otherwise it says
"The assistant heard ...". Modes: `ok`, `slow` (30 s before the first byte), `no_tools` (HTTP 400
for a request with tools, as a server without function calling answers), `bad_tool` (a call whose
arguments are not JSON), `error` (HTTP 500); `app.state.mode` switches it at run time. `delay_s`
holds every answer that long (benchmarks).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tests.conftest import free_port


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-standin", "object": "chat.completion.chunk", "model": "standin",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n".encode()


def _cities(text: str) -> list[str]:
    m = re.search(r"\bin ([A-Za-z]+)(?: and ([A-Za-z]+))?", text)
    return [c for c in (m.groups() if m else ("Oslo",)) if c]


def _tool_calls(body: dict[str, Any], user: str) -> list[tuple[str, str]]:
    """(name, arguments) of the calls the stand-in makes for this request, or []."""
    tools = body.get("tools") or []
    choice = body.get("tool_choice", "auto")
    if not tools or choice == "none":
        return []
    forced = choice == "required" or isinstance(choice, dict)
    if "weather" not in user.lower() and not forced:
        return []
    name = choice["function"]["name"] if isinstance(choice, dict) else tools[0]["function"]["name"]
    return [(name, json.dumps({"city": city})) for city in _cities(user)]


def make_app(mode: str, delay_s: float = 0.0) -> FastAPI:
    app = FastAPI()
    app.state.requests = []
    app.state.mode = mode  # a test may switch it between requests

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        app.state.requests.append(body)
        mode = app.state.mode
        if mode == "error":
            return JSONResponse({"error": {"message": "the model crashed"}}, status_code=500)
        if mode == "no_tools" and body.get("tools"):
            return JSONResponse({"error": {"message": "tools are not supported by this server"}}, status_code=400)
        last = body["messages"][-1]
        user = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "") or ""
        calls = [] if last["role"] == "tool" else _tool_calls(body, user)
        if last["role"] == "tool":
            outputs = [m["content"] for m in body["messages"][1:] if m["role"] == "tool"]
            text = f"The tool said {outputs[-1].strip().rstrip('.')}. Anything else?"
        else:
            text = f"The assistant heard {user.strip().rstrip('.')}. That is all."
        words = [] if calls else text.split(" ")
        limit = body.get("max_tokens")
        finish = "tool_calls" if calls else "stop"
        if limit is not None and len(words) > limit:
            words, finish = words[:limit], "length"

        async def events() -> AsyncIterator[bytes]:
            if mode == "slow":
                await asyncio.sleep(30)
            if delay_s:
                await asyncio.sleep(delay_s)
            yield _chunk({"role": "assistant", "content": ""})
            for i, (name, arguments) in enumerate(calls):
                yield _chunk({"tool_calls": [{"index": i, "id": f"call_standin{len(app.state.requests)}_{i}",
                                              "type": "function", "function": {"name": name, "arguments": ""}}]})
                if mode == "bad_tool":
                    arguments = arguments[: len(arguments) // 2]  # cut off: not JSON
                for j in range(0, len(arguments), 8):
                    yield _chunk({"tool_calls": [{"index": i, "function": {"arguments": arguments[j:j + 8]}}]})
            for i, w in enumerate(words):
                yield _chunk({"content": (" " if i else "") + w})
                await asyncio.sleep(0.01)
            yield _chunk({}, finish)
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {"prompt_tokens": 11 * len(body["messages"]), "completion_tokens": len(words) + 7 * len(calls),
                         "total_tokens": 0}
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                yield f"data: {json.dumps({'id': 'chatcmpl-standin', 'choices': [], 'usage': usage})}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@contextmanager
def chat_server(mode: str = "ok", delay_s: float = 0.0) -> Iterator[tuple[str, FastAPI]]:
    port = free_port()
    app = make_app(mode, delay_s)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1", app
    finally:
        server.should_exit = True
        thread.join(10)
