"""Responders: what the bot says after each turn. Echo and a scripted IVR live here; the client
of an OpenAI-compatible chat endpoint is in server/llm.py (it owns a socket)."""

from kombain.streaming.responders.base import (
    Message,
    Notice,
    Reply,
    ReplyEnd,
    ReplyPiece,
    Responder,
    ResponderError,
    ResponseRequest,
    ServerTools,
    Tool,
    ToolCall,
    ToolFailed,
    Usage,
)
from kombain.streaming.responders.echo import EchoResponder
from kombain.streaming.responders.ivr import (
    DTMF_KEYS,
    IvrScript,
    ScriptResponder,
    fill_prompt,
    spoken_digits,
)

__all__ = [
    "DTMF_KEYS", "EchoResponder", "IvrScript", "Message", "Notice", "Reply", "ReplyEnd", "ReplyPiece", "Responder",
    "ResponderError", "ResponseRequest", "ScriptResponder", "ServerTools", "Tool", "ToolCall", "ToolFailed", "Usage", "fill_prompt",
    "spoken_digits",
]
