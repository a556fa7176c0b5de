"""What every responder is: the request it answers, what it yields, and the calls a `Call` makes.

A responder reads the conversation's items (typed and spoken turns, function calls and their
outputs) and streams back text (`Reply`), tool calls (`ToolCall`) and, last, an optional `ReplyEnd`
with token usage. Phone-style callbacks (`dtmf`, `dtmf_deadline`, `poll`, `prompt_finished`) have
defaults that do nothing, so a responder only writes the ones it needs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from kombain.streaming.items import Item, message


class ResponderError(RuntimeError):
    """The responder could not produce a reply (endpoint down, timed out, bad answer)."""


@dataclass(frozen=True, slots=True)
class Message:
    """A turn as plain text (a view of a message item)."""

    role: str  # "user" | "assistant" | "system"
    content: str


@dataclass(frozen=True, slots=True)
class Reply:
    """A piece of reply text; `hangup` ends the call after it is spoken."""

    text: str = ""
    hangup: bool = False


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asks the client to run a function; `arguments` is a JSON string."""

    name: str
    arguments: str
    call_id: str = ""  # "" -> the conversation gives it one


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ReplyEnd:
    """Optional last piece of a reply: what the model reports about it."""

    usage: Usage | None = None
    incomplete: str | None = None  # "max_output_tokens": the model stopped at the limit


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the client should hear about once (e.g. the chat endpoint cannot call tools)."""

    code: str
    message: str


ReplyPiece = Reply | ToolCall | ReplyEnd | Notice


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call, described by a JSON Schema for its parameters."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True, slots=True)
class ResponseRequest:
    """One response to produce: the context (oldest item first) and the options for it."""

    items: tuple[Item, ...] = ()
    instructions: str = ""
    tools: tuple[Tool, ...] = ()
    tool_choice: str = "auto"  # auto | none | required | function (then `tool_name`)
    tool_name: str | None = None
    max_output_tokens: int | None = None

    @classmethod
    def of_text(cls, transcript: str, history: Sequence[Message] = (), instructions: str = "") -> ResponseRequest:
        """A request for the reply to `transcript` after `history` (plain text turns)."""
        items = [message(m.role, m.content) for m in history]
        return cls((*items, message("user", transcript)), instructions)

    @property
    def transcript(self) -> str:
        """The words of the last user message ("" when there is none)."""
        return next((i.text for i in reversed(self.items) if i.type == "message" and i.role == "user"), "")

    @property
    def last(self) -> Item | None:
        """The last item a reply answers: a user message or a function call's output."""
        return next((i for i in reversed(self.items)
                     if i.type == "function_call_output" or (i.type == "message" and i.role == "user")), None)

    @property
    def history(self) -> list[Message]:
        """Every message before the last user message, as plain text."""
        out = [Message(i.role or "user", i.text) for i in self.items if i.type == "message" and i.text]
        return out[:-1] if out and out[-1].role == "user" else out


class ToolFailed(RuntimeError):
    """A tool the server runs (MCP) failed; the message says why."""


class ServerTools(Protocol):
    """Tools the server runs itself (MCP): the responder may call them, the conversation runs them."""

    def tools(self) -> tuple[Tool, ...]: ...

    def label(self, name: str) -> str | None:
        """The server label of the tool called `name`, or None when it is not one of these."""
        ...

    def needs_approval(self, name: str) -> bool: ...

    async def call(self, name: str, arguments: str) -> str:
        """Run the tool; its output as text. Raises ToolFailed."""
        ...


class Responder:
    """The base every responder builds on; only `respond` has no default."""

    # True: `respond` depends on nothing but its request and changes nothing, so the call may ask
    # it at a pause before the turn has ended, and drop the answer if the caller goes on
    # (streaming/speculation.py). A responder with state (an IVR script) leaves it False.
    speculative: ClassVar[bool] = False

    def start(self) -> Sequence[Reply]:
        """What to say when the call starts (may be empty)."""
        return ()

    def respond(self, request: ResponseRequest) -> AsyncIterator[ReplyPiece]:
        """The reply to the conversation in `request`, streamed."""
        raise NotImplementedError

    def dtmf(self, digit: str, now: float) -> Sequence[Reply] | None:
        """A key press (0-9 * # A-D) at monotonic time `now`: replies to speak at once
        (interrupting the current one), or None when there is nothing to say yet."""
        return None

    def dtmf_deadline(self) -> float | None:
        """The monotonic time at which `poll` must be called (a key timeout), or None."""
        return None

    def poll(self, now: float) -> Sequence[Reply] | None:
        """Called at or after the deadline: what the timeout leads to, or None."""
        return None

    def prompt_finished(self, now: float) -> None:
        """The caller has heard the last prompt out, at monotonic time `now`."""

    async def aclose(self) -> None:
        """The call is over: release what the responder holds (a connection)."""
