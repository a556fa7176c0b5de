"""One response in progress: what it was asked, what it has sent, what the caller heard, and the
numbers reported when it ends (timings, token usage)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from kombain.streaming.conversation_events import ResponseOptions, TurnTiming
from kombain.streaming.items import Item
from kombain.streaming.responders import (
    Reply,
    ReplyEnd,
    ReplyPiece,
    ResponseRequest,
    ToolCall,
    Usage,
)

# Token estimates where the responder reports none (docs/protocol.md, "Usage"): text at one token
# per 4 characters; audio as OpenAI counts it, 10 tokens a second in and 20 a second out.
CHARS_PER_TOKEN = 4
AUDIO_IN_TOKENS_PER_S = 10
AUDIO_OUT_TOKENS_PER_S = 20


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _released() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


@dataclass
class Response:
    id: str
    item_id: str
    source: AsyncIterator[ReplyPiece]
    timing: TurnTiming | None
    options: ResponseOptions = field(default_factory=ResponseOptions)
    modalities: tuple[str, ...] = ("audio",)
    request: ResponseRequest | None = None
    side: bool = False  # out of band and text only: runs beside the spoken reply
    asks_responder: bool = False  # the source is the responder's answer (not text to say)
    depth: int = 0  # responses before this one that went on from a server-run tool's output
    cancel_reason: str | None = None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    chunks: list[tuple[str, int, int]] = field(default_factory=list)  # (text, start_ms, end_ms)
    sent_ms: int = 0
    play_end: float = 0.0  # estimated clock time the caller finishes playing what was sent
    first_text_at: float | None = None
    first_audio_at: float | None = None
    hangup: bool = False
    error: str | None = None
    barge_in_s: float | None = None  # interruption's first voiced sample -> output held
    played: tuple[int, float] | None = None  # the transport's last playback report: (ms heard, clock)
    client_heard_ms: int | None = None  # the client truncated the item at this point while it played
    message: Item | None = None  # the assistant message, once its first words go out
    output: list[Item] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage | None = None
    incomplete: str | None = None  # max_output_tokens
    text_chars: int = 0  # of reply text taken from the responder
    # Set: the response may show itself. A speculative reply (prepared at a pause, before its turn
    # ended) runs with it clear: its events wait in `held`, its first audio frame and its items wait
    # for it, and it is dropped unseen if the caller goes on (streaming/speculation.py).
    released: asyncio.Event = field(default_factory=_released)
    held: list[Any] = field(default_factory=list)

    @property
    def audio(self) -> bool:
        return "audio" in self.modalities


def take(resp: Response, piece: ReplyPiece) -> str:
    """Note one piece from the responder; returns its text, cut at max_output_tokens."""
    if isinstance(piece, ToolCall):
        resp.tool_calls.append(piece)
    elif isinstance(piece, ReplyEnd):
        resp.usage = piece.usage or resp.usage
        resp.incomplete = piece.incomplete or resp.incomplete
    elif isinstance(piece, Reply):
        resp.hangup = resp.hangup or piece.hangup
        limit = resp.request.max_output_tokens if resp.request is not None else None
        text = piece.text
        if limit is not None and resp.text_chars + len(text) > limit * CHARS_PER_TOKEN:
            text = text[: max(0, limit * CHARS_PER_TOKEN - resp.text_chars)]
            resp.incomplete = "max_output_tokens"
        resp.text_chars += len(text)
        return text
    return ""


def heard_ms(resp: Response, now: float) -> int:
    """How much of a response the caller heard. A transport's playback report is the truth as of
    when it came (plus the time since, while audio was still queued); without one, the estimate
    from pacing (sent minus what is still ahead of the caller's playhead)."""
    estimate = max(0, resp.sent_ms - round(max(0.0, resp.play_end - now) * 1000))
    if resp.client_heard_ms is not None:
        return min(resp.sent_ms, resp.client_heard_ms)
    if resp.played is None:
        return estimate
    pos, at = resp.played
    return min(resp.sent_ms, pos + round((now - at) * 1000), max(pos, estimate))


def status_of(resp: Response) -> tuple[str, str | None]:
    """The response's final status and its reason (a failed reply whose apology was spoken still failed)."""
    if resp.cancel_reason is not None:
        return "cancelled", resp.cancel_reason
    if resp.error:
        return "failed", "error"
    if resp.incomplete:
        return "incomplete", resp.incomplete
    return "completed", None


def timings(resp: Response) -> dict[str, float]:
    t = resp.timing
    out: dict[str, float] = {}
    if t is not None and resp.first_audio_at is not None:
        out = {"silence_wait": t.decided_at - t.speech_end_at, "stt": t.final_at - t.decided_at,
               "turn": resp.first_audio_at - t.speech_end_at}
        if resp.first_text_at is not None:
            out["responder"] = resp.first_text_at - t.final_at
            out["tts"] = resp.first_audio_at - resp.first_text_at
    if resp.cancel_reason == "turn_detected" and resp.barge_in_s is not None:
        out["barge_in"] = resp.barge_in_s
    return {k: round(v * 1000, 1) for k, v in out.items()}


def usage(resp: Response) -> dict[str, Any]:
    """Token counts in OpenAI's shape: the responder's where it reported them, else estimates."""
    out_text = sum(text_tokens(i.text if i.type == "message" else (i.arguments or "")) for i in resp.output)
    out_audio = math.ceil(resp.sent_ms / 1000 * AUDIO_OUT_TOKENS_PER_S)
    in_text = in_audio = 0
    if resp.request is not None:
        in_text = text_tokens(resp.request.instructions)
        for item in resp.request.items:
            for part in item.content:
                if part.type == "input_audio":
                    in_audio += math.ceil(part.audio_ms / 1000 * AUDIO_IN_TOKENS_PER_S)
                else:
                    in_text += text_tokens(part.words)
            in_text += text_tokens((item.arguments or "") + (item.output or ""))
    cached = 0
    if resp.usage is not None:  # the model's own count of text tokens replaces the estimate
        in_text, out_text, cached = resp.usage.input_tokens, resp.usage.output_tokens, resp.usage.cached_tokens
    total_in, total_out = in_text + in_audio, out_text + out_audio
    return {"total_tokens": total_in + total_out, "input_tokens": total_in, "output_tokens": total_out,
            "input_token_details": {"text_tokens": in_text, "audio_tokens": in_audio, "image_tokens": 0,
                                    "cached_tokens": cached},
            "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio}}
