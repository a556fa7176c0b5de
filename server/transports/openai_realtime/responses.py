"""Conversation events -> OpenAI Realtime response events (GA names, or beta `response.audio.*`)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from kombain.server.transports.openai_realtime.protocol import SessionConfig, server_event
from kombain.streaming.audio import alaw_encode, mulaw_encode
from kombain.streaming.conversation import (
    ConversationEvent,
    ResponseAudio,
    ResponseFailed,
    ResponseFinished,
    ResponseStarted,
    ResponseText,
)


def _names(beta: bool) -> dict[str, str]:
    if beta:
        return {"audio": "response.audio.delta", "audio_done": "response.audio.done",
                "text": "response.audio_transcript.delta", "text_done": "response.audio_transcript.done"}
    return {"audio": "response.output_audio.delta", "audio_done": "response.output_audio.done",
            "text": "response.output_audio_transcript.delta", "text_done": "response.output_audio_transcript.done"}


def _item(item_id: str, status: str, transcript: str | None, beta: bool) -> dict[str, Any]:
    content = [] if transcript is None else [{"type": "audio" if beta else "output_audio", "transcript": transcript}]
    return {"id": item_id, "object": "realtime.item", "type": "message", "role": "assistant", "status": status,
            "content": content}


def _response(resp_id: str, status: str, output: list[dict[str, Any]], details: dict[str, Any] | None,
              cfg: SessionConfig) -> dict[str, Any]:
    return {"id": resp_id, "object": "realtime.response", "status": status, "status_details": details,
            "output": output, "conversation_id": None,
            "output_modalities": ["audio"], "audio": {"output": {"voice": cfg.voice}}}


def render(ev: ConversationEvent, cfg: SessionConfig) -> list[dict[str, Any]]:
    """The server events one conversation event becomes."""
    beta = cfg.beta_names
    n = _names(beta)
    ids = {"output_index": 0, "content_index": 0}
    if isinstance(ev, ResponseStarted):
        return [
            server_event("response.created", response=_response(ev.response_id, "in_progress", [], None, cfg)),
            server_event("response.output_item.added", response_id=ev.response_id, output_index=0,
                         item=_item(ev.item_id, "in_progress", None, beta)),
            server_event("response.content_part.added", response_id=ev.response_id, item_id=ev.item_id, **ids,
                         part={"type": "audio", "transcript": ""}),
        ]
    if isinstance(ev, ResponseText):
        return [server_event(n["text"], response_id=ev.response_id, item_id=ev.item_id, **ids,
                             delta=ev.text)]
    if isinstance(ev, ResponseAudio):
        return [server_event(n["audio"], response_id=ev.response_id, item_id=ev.item_id, **ids,
                             delta=base64.b64encode(_encode(ev.pcm, cfg)).decode())]
    if isinstance(ev, ResponseFailed):
        return [server_event("error", error={"type": "server_error", "code": ev.code, "message": ev.message,
                                             "param": None, "event_id": None})]
    if isinstance(ev, ResponseFinished):
        status = ev.status
        details: dict[str, Any] | None = None
        if ev.status == "cancelled":
            details = {"type": "cancelled", "reason": ev.reason}
        elif ev.status == "failed":
            details = {"type": "failed", "error": {"type": "server_error", "code": ev.reason}}
        item = _item(ev.item_id, "incomplete" if ev.status != "completed" else "completed", ev.transcript, beta)
        out = [
            server_event(n["audio_done"], response_id=ev.response_id, item_id=ev.item_id, **ids),
            server_event(n["text_done"], response_id=ev.response_id, item_id=ev.item_id, **ids, transcript=ev.transcript),
            server_event("response.content_part.done", response_id=ev.response_id, item_id=ev.item_id, **ids,
                         part={"type": "audio", "transcript": ev.transcript}),
            server_event("response.output_item.done", response_id=ev.response_id, output_index=0, item=item),
        ]
        if ev.status == "cancelled":
            # What the caller heard, as conversation.item.truncate would have recorded it.
            out.append(server_event("conversation.item.truncated", item_id=ev.item_id, content_index=0,
                                    audio_end_ms=ev.audio_heard_ms))
        done = _response(ev.response_id, status, [item], details, cfg)
        done["kombain"] = {"audio_sent_ms": ev.audio_sent_ms, "audio_heard_ms": ev.audio_heard_ms,
                           "timings_ms": ev.timings_ms, "hangup": ev.hangup}
        out.append(server_event("response.done", response=done))
        return out
    return []


def _encode(pcm: bytes, cfg: SessionConfig) -> bytes:
    enc = cfg.output_format.encoding
    if enc == "pcm16":
        return pcm
    samples = np.frombuffer(pcm, "<i2")
    return mulaw_encode(samples) if enc == "mulaw" else alaw_encode(samples)
