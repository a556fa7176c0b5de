"""What a conversation tells its transport: responses, their output items, audio and text, and
items added to the conversation. Protocol-free; server/transports render them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kombain.streaming.items import Item
from kombain.streaming.responders import Tool


@dataclass(frozen=True, slots=True)
class TurnTiming:
    """Clock times of one user turn, for the `turn` latency and its parts."""

    speech_end_at: float  # the last voiced sample arrived
    decided_at: float  # the endpointer ended the turn
    final_at: float  # the final transcript was sent


@dataclass(frozen=True, slots=True)
class ResponseOptions:
    """How one response is made. Every None means: as the conversation is set."""

    instructions: str | None = None
    modalities: tuple[str, ...] | None = None  # ("audio",) or ("text",)
    in_conversation: bool = True  # False: out of band, the conversation is not changed
    input: tuple[Item, ...] | None = None  # the context for an out-of-band response
    tools: tuple[Tool, ...] | None = None
    tool_choice: str | None = None  # auto | none | required | function (then tool_name)
    tool_name: str | None = None
    max_output_tokens: int | None = None
    metadata: dict[str, str] | None = None
    say: str | None = None  # speak this verbatim instead of asking the responder
    hangup: bool = False  # end the call after `say`


@dataclass(frozen=True, slots=True)
class ResponseStarted:
    response_id: str
    item_id: str  # the id the response's message will have
    options: ResponseOptions = field(default_factory=ResponseOptions)
    modalities: tuple[str, ...] = ("audio",)


@dataclass(frozen=True, slots=True)
class ItemAdded:
    """An item joined the conversation (`response_id` None), or a response began an output item."""

    item: Item  # a snapshot
    previous_item_id: str | None = None
    response_id: str | None = None
    output_index: int = 0
    in_conversation: bool = True


@dataclass(frozen=True, slots=True)
class ItemDone:
    """An item is final (a response's output item is complete, or cut short)."""

    item: Item
    previous_item_id: str | None = None
    response_id: str | None = None
    output_index: int = 0
    in_conversation: bool = True


@dataclass(frozen=True, slots=True)
class ResponseAudio:
    response_id: str
    item_id: str
    pcm: bytes  # PCM16 LE mono at the conversation's rate
    end_ms: int = 0  # position in the response at the end of this chunk (for playback reports)


@dataclass(frozen=True, slots=True)
class ResponseText:
    response_id: str
    item_id: str
    text: str  # spoken: the clause whose audio starts now; written: the next piece of text
    audio: bool = True  # False: a text-only response (no audio follows)
    output_index: int = 0


@dataclass(frozen=True, slots=True)
class ArgumentsDelta:
    """Arguments of a function call the response is making (`kind` mcp_call: a call the server runs)."""

    response_id: str
    item_id: str
    call_id: str
    delta: str
    output_index: int = 0
    kind: str = "function_call"


@dataclass(frozen=True, slots=True)
class ToolRunState:
    """A call the server runs (MCP) is `in_progress`, `completed` or `failed`."""

    response_id: str
    item_id: str
    output_index: int
    state: str


@dataclass(frozen=True, slots=True)
class ResponseFinished:
    response_id: str
    item_id: str
    status: str  # completed | cancelled | failed | incomplete
    reason: str | None  # turn_detected | client_cancelled | error | max_output_tokens | ...
    transcript: str  # what the caller heard (all of it when completed)
    audio_sent_ms: int
    audio_heard_ms: int
    timings_ms: dict[str, float]
    hangup: bool = False
    output: tuple[Item, ...] = ()
    usage: dict[str, Any] | None = None
    error: str | None = None  # why a failed response failed
    options: ResponseOptions = field(default_factory=ResponseOptions)
    modalities: tuple[str, ...] = ("audio",)
    # The message item was cut at what was heard (a barge-in): conversation.item.truncated
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class ResponseFailed:
    """A responder's problem the client should hear about (kept for transports that log it)."""

    response_id: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class ResponseNotice:
    """Something the client should be told once, as an error event (the response goes on)."""

    response_id: str
    code: str
    message: str


ConversationEvent = (ResponseStarted | ResponseAudio | ResponseText | ResponseFinished | ResponseFailed
                     | ItemAdded | ItemDone | ArgumentsDelta | ResponseNotice | ToolRunState)
