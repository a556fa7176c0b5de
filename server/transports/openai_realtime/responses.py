"""Conversation events -> OpenAI Realtime server events (GA names, or the beta ones).

GA order for a spoken reply: response.created; response.output_item.added, conversation.item.added,
response.content_part.added; response.output_audio_transcript.delta / response.output_audio.delta
...; response.output_audio.done, response.output_audio_transcript.done, response.content_part.done,
response.output_item.done, conversation.item.done; response.done. A text-only reply uses
response.output_text.delta/done; a function call, response.function_call_arguments.delta/done.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from kombain.server.transports.openai_realtime.items import item_json
from kombain.server.transports.openai_realtime.protocol import SessionConfig, server_event
from kombain.streaming.audio import alaw_encode, mulaw_encode
from kombain.streaming.conversation import (
    ArgumentsDelta,
    ConversationEvent,
    ItemAdded,
    ItemDone,
    ResponseAudio,
    ResponseFinished,
    ResponseStarted,
    ResponseText,
    ToolRunState,
)
from kombain.streaming.items import Item


def _names(beta: bool) -> dict[str, str]:
    if beta:
        return {"audio": "response.audio.delta", "audio_done": "response.audio.done",
                "transcript": "response.audio_transcript.delta", "transcript_done": "response.audio_transcript.done",
                "text": "response.text.delta", "text_done": "response.text.done",
                "item_added": "conversation.item.created"}
    return {"audio": "response.output_audio.delta", "audio_done": "response.output_audio.done",
            "transcript": "response.output_audio_transcript.delta",
            "transcript_done": "response.output_audio_transcript.done",
            "text": "response.output_text.delta", "text_done": "response.output_text.done",
            "item_added": "conversation.item.added"}


def _response(resp_id: str, status: str, output: list[dict[str, Any]], details: dict[str, Any] | None,
              cfg: SessionConfig, modalities: tuple[str, ...], metadata: dict[str, str] | None,
              in_conversation: bool, usage: dict[str, Any] | None = None,
              max_tokens: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": resp_id, "object": "realtime.response", "status": status, "status_details": details,
        "output": output, "conversation_id": "conv_default" if in_conversation else None,
        "metadata": metadata, "usage": usage, "max_output_tokens": max_tokens if max_tokens is not None else "inf",
    }
    if cfg.beta_names:
        out["modalities"] = ["audio", "text"] if "audio" in modalities else ["text"]
    else:
        out["output_modalities"] = list(modalities)
        out["audio"] = {"output": {"format": _format(cfg), "voice": cfg.voice}}
    return out


def _format(cfg: SessionConfig) -> dict[str, Any]:
    fmt = cfg.output_format
    if fmt.encoding == "pcm16":
        return {"type": "audio/pcm", "rate": fmt.rate}
    return {"type": "audio/pcmu" if fmt.encoding == "mulaw" else "audio/pcma"}


def _part(item: Item, beta: bool) -> dict[str, Any]:
    part = item.content[0] if item.content else None
    if part is not None and part.type == "output_text":
        return {"type": "text", "text": part.text or ""}
    return {"type": "audio", "transcript": (part.transcript if part is not None else "") or ""}


def item_events(ev: ItemAdded | ItemDone, cfg: SessionConfig) -> list[dict[str, Any]]:
    """An item added to the conversation or done, as a response output item or on its own."""
    beta, n = cfg.beta_names, _names(cfg.beta_names)
    item = item_json(ev.item, beta)
    conv_added = server_event(n["item_added"], previous_item_id=ev.previous_item_id, item=item)
    if ev.response_id is None:  # a client's item, or the caller's audio turn
        if isinstance(ev, ItemAdded):
            return [conv_added]
        return [] if beta else [server_event("conversation.item.done", previous_item_id=ev.previous_item_id,
                                             item=item)]
    rid, index = ev.response_id, ev.output_index
    out: list[dict[str, Any]] = []
    if isinstance(ev, ItemAdded):
        out.append(server_event("response.output_item.added", response_id=rid, output_index=index, item=item))
        if ev.in_conversation:
            out.append(conv_added)
        if ev.item.type == "message":
            out.append(server_event("response.content_part.added", response_id=rid, item_id=ev.item.id,
                                    output_index=index, content_index=0, part=_part(ev.item, beta)))
        return out
    ids = {"response_id": rid, "item_id": ev.item.id, "output_index": index}
    if ev.item.type == "message":
        part = ev.item.content[0] if ev.item.content else None
        if part is not None and part.type == "output_text":
            out.append(server_event(n["text_done"], **ids, content_index=0, text=part.text or ""))
        else:
            out.append(server_event(n["audio_done"], **ids, content_index=0))
            out.append(server_event(n["transcript_done"], **ids, content_index=0,
                                    transcript=(part.transcript if part is not None else "") or ""))
        out.append(server_event("response.content_part.done", **ids, content_index=0, part=_part(ev.item, beta)))
    elif ev.item.type == "function_call":
        out.append(server_event("response.function_call_arguments.done", **ids, call_id=ev.item.call_id,
                                name=ev.item.name, arguments=ev.item.arguments or ""))
    out.append(server_event("response.output_item.done", response_id=rid, output_index=index, item=item))
    if ev.in_conversation and not beta:
        out.append(server_event("conversation.item.done", previous_item_id=ev.previous_item_id, item=item))
    return out


def render(ev: ConversationEvent, cfg: SessionConfig, extensions: bool = True) -> list[dict[str, Any]]:
    """The server events one conversation event becomes."""
    beta = cfg.beta_names
    n = _names(beta)
    if isinstance(ev, ResponseStarted):
        o = ev.options
        return [server_event("response.created", response=_response(
            ev.response_id, "in_progress", [], None, cfg, ev.modalities, o.metadata, o.in_conversation,
            max_tokens=o.max_output_tokens))]
    if isinstance(ev, ItemAdded | ItemDone):
        return item_events(ev, cfg)
    if isinstance(ev, ResponseText):
        ids = {"response_id": ev.response_id, "item_id": ev.item_id, "output_index": ev.output_index,
               "content_index": 0}
        return [server_event(n["transcript"] if ev.audio else n["text"], **ids, delta=ev.text)]
    if isinstance(ev, ResponseAudio):
        return [server_event(n["audio"], response_id=ev.response_id, item_id=ev.item_id, output_index=0,
                             content_index=0, delta=base64.b64encode(_encode(ev.pcm, cfg)).decode())]
    if isinstance(ev, ArgumentsDelta) and ev.kind == "mcp_call":  # the server has the whole call: one delta
        ids = {"response_id": ev.response_id, "item_id": ev.item_id, "output_index": ev.output_index}
        return [server_event("response.mcp_call_arguments.delta", **ids, delta=ev.delta),
                server_event("response.mcp_call_arguments.done", **ids, arguments=ev.delta)]
    if isinstance(ev, ArgumentsDelta):
        return [server_event("response.function_call_arguments.delta", response_id=ev.response_id,
                             item_id=ev.item_id, output_index=ev.output_index, call_id=ev.call_id, delta=ev.delta)]
    if isinstance(ev, ToolRunState):
        return [server_event(f"response.mcp_call.{ev.state}", item_id=ev.item_id, output_index=ev.output_index)]
    if isinstance(ev, ResponseFinished):
        return _finished(ev, cfg, extensions)
    return []


def _finished(ev: ResponseFinished, cfg: SessionConfig, extensions: bool) -> list[dict[str, Any]]:
    details: dict[str, Any] | None = None
    if ev.status == "cancelled":
        details = {"type": "cancelled", "reason": ev.reason}
    elif ev.status == "incomplete":
        details = {"type": "incomplete", "reason": ev.reason}
    elif ev.status == "failed":
        details = {"type": "failed", "error": {"type": "server_error", "code": "responder_failed",
                                               "message": ev.error or ev.reason}}
    out = []
    if ev.truncated and ev.options.in_conversation:
        # What the caller heard, as conversation.item.truncate would have recorded it.
        out.append(server_event("conversation.item.truncated", item_id=ev.item_id, content_index=0,
                                audio_end_ms=ev.audio_heard_ms))
    o = ev.options
    done = _response(ev.response_id, ev.status, [item_json(i, cfg.beta_names) for i in ev.output], details, cfg,
                     ev.modalities, o.metadata, o.in_conversation, ev.usage, o.max_output_tokens)
    if extensions:
        done["kombain"] = {"audio_sent_ms": ev.audio_sent_ms, "audio_heard_ms": ev.audio_heard_ms,
                           "timings_ms": ev.timings_ms, "hangup": ev.hangup}
    out.append(server_event("response.done", response=done))
    return out


def _encode(pcm: bytes, cfg: SessionConfig) -> bytes:
    enc = cfg.output_format.encoding
    if enc == "pcm16":
        return pcm
    samples = np.frombuffer(pcm, "<i2")
    return mulaw_encode(samples) if enc == "mulaw" else alaw_encode(samples)
