"""Responders: what the bot says after each user turn. Echo, a scripted IVR, or any
OpenAI-compatible chat completions endpoint (llama.cpp, vLLM, Ollama), streamed clause by clause."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import yaml

log = logging.getLogger("kombain.responder")


class ResponderError(RuntimeError):
    """The responder could not produce a reply (endpoint down, timed out, bad answer)."""


@dataclass(frozen=True, slots=True)
class Message:
    role: str  # "user" | "assistant" | "system"
    content: str


@dataclass(frozen=True, slots=True)
class Reply:
    """A piece of reply text; `hangup` ends the call after it is spoken."""

    text: str = ""
    hangup: bool = False


class Responder(Protocol):
    def respond(self, transcript: str, history: Sequence[Message], instructions: str) -> AsyncIterator[Reply]: ...

    def start(self) -> Sequence[Reply]: ...


class EchoResponder:
    """Says back what it heard: a fresh install is a working demo."""

    def start(self) -> Sequence[Reply]:
        return ()

    async def respond(self, transcript: str, history: Sequence[Message], instructions: str) -> AsyncIterator[Reply]:
        if transcript.strip():
            yield Reply(f"You said: {transcript.strip()}")


# --- scripted IVR ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Route:
    keywords: tuple[str, ...]
    goto: str


@dataclass(frozen=True, slots=True)
class _Node:
    say: str
    routes: tuple[_Route, ...] = ()
    fallback: str | None = None
    hangup: bool = False
    next: str | None = None  # go on to this node right after speaking (no input needed)


@dataclass
class IvrScript:
    """A menu loaded from YAML: nodes with prompts, keyword routes, fallbacks and hang-ups."""

    start: str
    nodes: dict[str, _Node]
    max_fallbacks: int = 2
    goodbye: str = "Goodbye."

    @classmethod
    def load(cls, path: str | Path) -> IvrScript:
        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read IVR script {path}: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> IvrScript:
        if not isinstance(data, dict) or not isinstance(data.get("nodes"), dict):
            raise ValueError("an IVR script needs a 'nodes' mapping")
        nodes: dict[str, _Node] = {}
        for name, raw in data["nodes"].items():
            if not isinstance(raw, dict) or not isinstance(raw.get("say", ""), str):
                raise ValueError(f"node {name!r}: needs a 'say' string")
            routes = tuple(
                _Route(tuple(str(k).lower() for k in r.get("keywords", [])), str(r["goto"]))
                for r in raw.get("routes", []) or []
            )
            nodes[str(name)] = _Node(raw.get("say", ""), routes, raw.get("fallback"), bool(raw.get("hangup", False)),
                                     raw.get("next"))
        start = str(data.get("start", next(iter(nodes), "")))
        for name, node in nodes.items():
            for target in [r.goto for r in node.routes] + ([node.next] if node.next else []):
                if target not in nodes:
                    raise ValueError(f"node {name!r} routes to unknown node {target!r}")
        if start not in nodes:
            raise ValueError(f"start node {start!r} is not defined")
        return cls(start, nodes, int(data.get("max_fallbacks", 2)), str(data.get("goodbye", "Goodbye.")))


@dataclass
class ScriptResponder:
    """Walks an IvrScript: each user turn is matched against the current node's keywords."""

    script: IvrScript
    node: str = ""
    misses: int = 0
    _said: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.node = self.script.start

    def start(self) -> Sequence[Reply]:
        return self._enter(self.script.start)

    def _enter(self, name: str) -> list[Reply]:
        replies: list[Reply] = []
        seen: set[str] = set()
        while name and name not in seen:
            seen.add(name)
            self.node, self.misses = name, 0
            node = self.script.nodes[name]
            replies.append(Reply(node.say, hangup=node.hangup))
            if node.hangup:
                break
            name = node.next or ""
        return replies

    async def respond(self, transcript: str, history: Sequence[Message], instructions: str) -> AsyncIterator[Reply]:
        words = set(re.findall(r"[a-z0-9']+", transcript.lower()))
        text = " " + " ".join(re.findall(r"[a-z0-9']+", transcript.lower())) + " "
        node = self.script.nodes[self.node]
        for route in node.routes:
            if any((k in words) if " " not in k else (f" {k} " in text) for k in route.keywords):
                for i, r in enumerate(self._enter(route.goto)):
                    yield Reply(("" if i == 0 else " ") + r.text, r.hangup)
                return
        self.misses += 1
        if self.misses > self.script.max_fallbacks:
            yield Reply(self.script.goodbye, hangup=True)
            return
        yield Reply(node.fallback or f"Sorry, I did not catch that. {node.say}")


# --- OpenAI-compatible chat completions --------------------------------------------------------

@dataclass
class OpenAIResponder:
    """Streams a reply from `POST {base_url}/chat/completions` with `stream: true`."""

    base_url: str
    model: str
    api_key: str = ""
    system_prompt: str = "You are a helpful voice assistant. Answer briefly, in plain spoken sentences."
    timeout_s: float = 10.0
    max_history: int = 20
    client: httpx.AsyncClient | None = None

    def start(self) -> Sequence[Reply]:
        return ()

    async def respond(self, transcript: str, history: Sequence[Message], instructions: str) -> AsyncIterator[Reply]:
        messages = [{"role": "system", "content": instructions or self.system_prompt}]
        messages += [{"role": m.role, "content": m.content} for m in history[-self.max_history:]]
        messages.append({"role": "user", "content": transcript})
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {"model": self.model, "messages": messages, "stream": True}
        client = self.client or httpx.AsyncClient()
        url = self.base_url.rstrip("/") + "/chat/completions"
        try:
            # One deadline for the whole reply, and a shorter one for each read, so a stalled
            # endpoint is noticed quickly.
            timeout = httpx.Timeout(self.timeout_s, read=min(self.timeout_s, 5.0))
            async with client.stream("POST", url, json=body, headers=headers, timeout=timeout) as resp:
                if resp.status_code != 200:
                    detail = (await resp.aread())[:300].decode(errors="replace")
                    raise ResponderError(f"chat endpoint answered HTTP {resp.status_code}: {detail}")
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        delta = json.loads(data)["choices"][0].get("delta", {}).get("content")
                    except (ValueError, KeyError, IndexError, TypeError):
                        raise ResponderError(f"chat endpoint sent an unreadable event: {data[:200]}") from None
                    if delta:
                        yield Reply(delta)
        except httpx.HTTPError as exc:
            raise ResponderError(f"chat endpoint {url} failed: {type(exc).__name__}: {exc}") from None
        finally:
            if self.client is None:
                await client.aclose()
