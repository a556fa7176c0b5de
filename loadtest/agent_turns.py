"""`python -m kombain.loadtest.agent_turns`: what an agent framework waits for, over real sockets.

1. typed turn: `conversation.item.create` (a user message) + `response.create` -> the first
   `response.output_audio.delta`, echo responder, at 1 and N simultaneous sessions (each reply is
   cancelled at its first audio, so the next round starts at once).
2. function call round trip, LLM responder against the scripted chat stand-in holding every answer
   `--delay-ms`: `response.create` -> `response.function_call_arguments.done`, then the
   `function_call_output` + `response.create` -> the first `response.output_text.delta`; beside
   the same two requests sent straight to the stand-in (first tool-call chunk / first text chunk),
   so the difference is what kombain adds.

Run from the repository root (the stand-in is tests/integration/chat_standin.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

from kombain.loadtest.server_proc import local_server
from kombain.loadtest.stats import summary

WEATHER = {"type": "function", "name": "get_weather", "description": "The weather now in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def _user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


class Session:
    def __init__(self, ws: Any) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, ws_url: str, **session: Any) -> Session:
        s = cls(await websockets.connect(ws_url + "/v1/realtime", max_size=2**24))
        await s.until("session.created")
        await s.send("session.update", session={"type": "realtime", "audio": {"input": {"turn_detection": None}},
                                                **session})
        await s.until("session.updated")
        return s

    async def send(self, type_: str, **fields: Any) -> None:
        await self.ws.send(json.dumps({"type": type_, **fields}))

    async def until(self, *types: str) -> dict[str, Any]:
        while True:
            event = json.loads(await self.ws.recv())
            if event["type"] == "error":
                raise RuntimeError(event["error"])
            if event["type"] in types:
                return event


async def typed_turns(ws_url: str, sessions: int, rounds: int) -> list[float]:
    async def one(k: int) -> list[float]:
        s = await Session.open(ws_url)
        out = []
        for i in range(rounds + 1):
            await s.send("conversation.item.create", item=_user(f"This is message {i} of session {k}."))
            await s.until("conversation.item.done")
            t0 = time.perf_counter()
            await s.send("response.create")
            await s.until("response.output_audio.delta")
            if i:  # the first round warms the session up
                out.append(time.perf_counter() - t0)
            await s.send("response.cancel")
            await s.until("response.done")
        await s.ws.close()
        return out

    results = await asyncio.gather(*(one(k) for k in range(sessions)))
    return [x for r in results for x in r]


async def tool_round_trips(ws_url: str, rounds: int) -> tuple[list[float], list[float]]:
    s = await Session.open(ws_url, output_modalities=["text"], tools=[WEATHER])
    calls, answers = [], []
    for i in range(rounds + 1):
        await s.send("conversation.item.create", item=_user("What is the weather in Oslo?"))
        await s.until("conversation.item.done")
        t0 = time.perf_counter()
        await s.send("response.create")
        done = await s.until("response.function_call_arguments.done")
        t1 = time.perf_counter()
        await s.until("response.done")
        await s.send("conversation.item.create", item={"type": "function_call_output", "call_id": done["call_id"],
                                                       "output": "sunny, 21 degrees"})
        await s.until("conversation.item.done")
        t2 = time.perf_counter()
        await s.send("response.create")
        await s.until("response.output_text.delta")
        t3 = time.perf_counter()
        await s.until("response.done")
        if i:
            calls.append(t1 - t0)
            answers.append(t3 - t2)
    await s.ws.close()
    return calls, answers


async def direct(chat_url: str, rounds: int) -> tuple[list[float], list[float]]:
    """The same two requests straight to the stand-in: first tool-call chunk, first text chunk."""
    tool = {"type": "function", "function": {"name": "get_weather", "description": "", "parameters":
                                             WEATHER["parameters"]}}
    ask = [{"role": "user", "content": "What is the weather in Oslo?"}]
    answer = [*ask, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    out: tuple[list[float], list[float]] = ([], [])
    async with httpx.AsyncClient() as client:
        for i in range(rounds + 1):
            for j, (messages, key) in enumerate(((ask, "tool_calls"), (answer, "content"))):
                t0 = time.perf_counter()
                body = {"model": "m", "messages": messages, "stream": True, "tools": [tool]}
                async with client.stream("POST", chat_url + "/chat/completions", json=body) as resp:
                    async for line in resp.aiter_lines():
                        if line.startswith("data:") and f'"{key}"' in line and '"content": ""' not in line:
                            break
                if i:
                    out[j].append(time.perf_counter() - t0)
    return out


def _row(name: str, samples: list[float]) -> dict[str, Any]:
    s = summary(samples)
    print(f"{name:<48} n={s['count']:<4} p50={s['p50_ms']} ms  p95={s['p95_ms']} ms", flush=True)
    return {"name": name, **s}


async def _main(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(Path.cwd()))
    from tests.integration.chat_standin import chat_server

    report: dict[str, Any] = {"typed": [], "tools": {}}
    with local_server({"KOMBAIN_RESPONDER": "echo"}) as (url, _pid):
        ws_url = url.replace("http://", "ws://")
        for n in args.sessions:
            report["typed"].append(_row(f"typed message -> first audio, {n} session(s)",
                                        await typed_turns(ws_url, n, args.rounds)))
    with chat_server(delay_s=args.delay_ms / 1000) as (chat_url, _app), \
            local_server({"KOMBAIN_RESPONDER": "openai", "KOMBAIN_RESPONDER_URL": chat_url}) as (url, _pid):
        calls, answers = await tool_round_trips(url.replace("http://", "ws://"), args.rounds)
        d_calls, d_answers = await direct(chat_url, args.rounds)
        report["tools"] = {
            "delay_ms": args.delay_ms,
            "via_kombain_call": _row("response.create -> function_call_arguments.done", calls),
            "direct_call": _row("stand-in alone: first tool-call chunk", d_calls),
            "via_kombain_answer": _row("function_call_output -> first output_text.delta", answers),
            "direct_answer": _row("stand-in alone: first text chunk", d_answers),
        }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 8])
    p.add_argument("--rounds", type=int, default=20, help="measured rounds per session (after one warm-up)")
    p.add_argument("--delay-ms", type=float, default=200, help="the stand-in's fixed delay before each answer")
    p.add_argument("--out", type=Path, default=Path("loadtest/results/agent_turns.json"))
    return asyncio.run(_main(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
