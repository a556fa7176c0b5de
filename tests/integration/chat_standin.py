"""A tiny OpenAI-compatible chat completions server (streaming), standing in for llama.cpp/vLLM."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from tests.conftest import free_port


def make_app(mode: str) -> FastAPI:
    app = FastAPI()
    app.state.requests = []

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> StreamingResponse:
        body = await request.json()
        app.state.requests.append(body)
        user = body["messages"][-1]["content"]
        words = f"The assistant heard {user.strip().rstrip('.')}. That is all.".split(" ")

        async def events() -> AsyncIterator[bytes]:
            if mode == "slow":
                await asyncio.sleep(30)
            for i, w in enumerate(words):
                chunk = {"choices": [{"index": 0, "delta": {"content": (" " if i else "") + w}}]}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
                await asyncio.sleep(0.01)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@contextmanager
def chat_server(mode: str = "ok") -> Iterator[tuple[str, FastAPI]]:
    port = free_port()
    app = make_app(mode)
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
