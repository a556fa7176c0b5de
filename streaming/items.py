"""The conversation as an ordered list of items, as the Realtime protocol models it (protocol-free).

An item is a message (`system` / `user` / `assistant`, with text or audio parts), a function call
the model made, or the output a client returned for one. Spoken user turns, typed input, replies
and tool calls all land here, so a responder reads one history whatever way each turn came in.
Pure logic: no I/O, no clock.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

# Bounds (docs/protocol.md, "Limits"): a long call keeps its most recent items.
MAX_ITEMS = 512  # items kept per conversation; the oldest are dropped past this
MAX_PARTS = 16  # content parts of one message
MAX_TEXT_CHARS = 32_000  # one part's text or transcript, a function call's arguments
MAX_OUTPUT_CHARS = 64_000  # a function_call_output's output


class ItemError(ValueError):
    """An item operation the conversation cannot do; `code` is OpenAI's error code."""

    def __init__(self, message: str, code: str = "invalid_value", param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.param = param


def new_item_id() -> str:
    return "item_" + secrets.token_hex(10)


@dataclass(slots=True)
class Part:
    """One content part: `input_text`, `input_audio`, `output_text` or `output_audio`."""

    type: str
    text: str | None = None  # input_text / output_text
    transcript: str | None = None  # input_audio / output_audio
    audio_ms: int = 0  # output_audio: length of the audio sent; input_audio: length of the turn
    # output_audio: (text, start_ms, end_ms) of each spoken clause, to cut the transcript at a time
    clauses: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def words(self) -> str:
        return (self.text if self.text is not None else self.transcript) or ""


@dataclass(slots=True)
class Item:
    id: str
    type: str  # message | function_call | function_call_output | mcp_call | mcp_approval_request | ...
    role: str | None = None  # message: system | user | assistant
    content: list[Part] = field(default_factory=list)
    status: str = "completed"  # in_progress | completed | incomplete
    call_id: str | None = None  # function_call, function_call_output
    name: str | None = None  # function_call
    arguments: str | None = None  # function_call (a JSON string)
    output: str | None = None  # function_call_output, mcp_call
    # MCP (tools the server runs): mcp_call, mcp_approval_request, mcp_approval_response, mcp_list_tools
    server_label: str | None = None
    error: str | None = None  # mcp_call: why the call failed
    approval_request_id: str | None = None  # mcp_call, mcp_approval_response
    approve: bool | None = None  # mcp_approval_response
    tools: list[dict[str, object]] | None = None  # mcp_list_tools: name, description, input_schema

    @property
    def text(self) -> str:
        """What the item says in words (text parts and transcripts), "" for none."""
        return " ".join(p.words.strip() for p in self.content if p.words.strip())

    def copy(self) -> Item:
        return replace(self, content=[replace(p, clauses=list(p.clauses)) for p in self.content])


def message(role: str, text: str, item_id: str | None = None, *, part: str | None = None) -> Item:
    kind = part or ("output_text" if role == "assistant" else "input_text")
    return Item(item_id or new_item_id(), "message", role, [Part(kind, text=text)])


def heard_text(clauses: list[tuple[str, int, int]], heard_ms: int) -> str:
    """The words of the clauses played up to `heard_ms` (a clause cut midway keeps its share)."""
    words: list[str] = []
    for text, start, end in clauses:
        if end <= heard_ms:
            words += text.split()
        elif start < heard_ms:
            part = text.split()
            words += part[: int(len(part) * (heard_ms - start) / max(1, end - start))]
            break
    return " ".join(words)


class Items:
    """The ordered items of one conversation, by id."""

    def __init__(self, max_items: int = MAX_ITEMS) -> None:
        self._items: list[Item] = []
        self.max_items = max_items

    def __iter__(self) -> Iterator[Item]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return any(i.id == item_id for i in self._items)

    def get(self, item_id: str) -> Item:
        for item in self._items:
            if item.id == item_id:
                return item
        raise ItemError(f"item {item_id!r} is not in the conversation", "item_not_found", "item_id")

    def previous_id(self, item_id: str) -> str | None:
        for i, item in enumerate(self._items):
            if item.id == item_id:
                return self._items[i - 1].id if i else None
        return None

    def add(self, item: Item, previous_item_id: str | None = None) -> str | None:
        """Insert `item` after `previous_item_id` ("root": first; None: last). Returns the id of
        the item now before it. The oldest items go once there are more than `max_items`."""
        if item.id in self:
            raise ItemError(f"an item with id {item.id!r} is already in the conversation", "invalid_value", "item.id")
        if previous_item_id is None:
            index = len(self._items)
        elif previous_item_id == "root":
            index = 0
        else:
            index = next((i + 1 for i, it in enumerate(self._items) if it.id == previous_item_id), -1)
            if index < 0:
                raise ItemError(f"previous_item_id {previous_item_id!r} is not in the conversation",
                                "item_not_found", "previous_item_id")
        self._items.insert(index, item)
        if len(self._items) > self.max_items:
            del self._items[: len(self._items) - self.max_items]
        return self.previous_id(item.id)

    def delete(self, item_id: str) -> Item:
        item = self.get(item_id)
        self._items.remove(item)
        return item

    def truncate(self, item_id: str, content_index: int, audio_end_ms: int) -> Item:
        """Cut an assistant audio part to what was heard: audio past `audio_end_ms` and the words
        spoken in it are dropped from the record."""
        item = self.get(item_id)
        if item.type != "message" or item.role != "assistant":
            raise ItemError("only assistant messages can be truncated", "invalid_value", "item_id")
        if not 0 <= content_index < len(item.content) or item.content[content_index].type != "output_audio":
            raise ItemError(f"item {item_id!r} has no audio part at content_index {content_index}",
                            "invalid_value", "content_index")
        part = item.content[content_index]
        if audio_end_ms > part.audio_ms:
            raise ItemError(f"audio_end_ms {audio_end_ms} is beyond the {part.audio_ms} ms of audio sent",
                            "invalid_value", "audio_end_ms")
        # The clauses and the length sent stay: a later truncate (the client's own, after the
        # server's estimate at barge-in) may move the cut either way within what was sent.
        part.transcript = heard_text(part.clauses, audio_end_ms)
        return item

    def function_call(self, call_id: str) -> Item | None:
        return next((i for i in self._items if i.type == "function_call" and i.call_id == call_id), None)

    def last_user_text(self) -> str:
        return next((i.text for i in reversed(self._items) if i.type == "message" and i.role == "user"), "")
