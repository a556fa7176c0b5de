"""OpenAI-compatible chat completions, sans I/O: the request body a conversation becomes, and the
streamed answer (`data:` lines) folded into text, tool calls, usage and the finish reason."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from kombain.streaming.items import Item
from kombain.streaming.responders import ResponderError, ResponseRequest, ToolCall, Usage

MAX_TOOL_CALLS = 16  # in one answer
MAX_ARGUMENTS_CHARS = 32_000  # of one call's arguments


def chat_messages(request: ResponseRequest, system_prompt: str, max_items: int) -> list[dict[str, Any]]:
    """The conversation as chat messages: system prompt first, then the last `max_items` items
    (function calls as an assistant message's `tool_calls`, their outputs as `tool` messages)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": request.instructions or system_prompt}]
    items = list(request.items)[-max_items:]
    # A tool message must follow the call it answers: never start the window on an orphan output.
    while items and items[0].type == "function_call_output":
        items.pop(0)
    requests = {i.id: i for i in items if i.type == "mcp_approval_request"}
    for item in items:
        if item.type == "mcp_approval_response" and not item.approve and item.approval_request_id in requests:
            # A call the client declined: the model hears that it was not made.
            declined = replace(requests[item.approval_request_id], type="mcp_call", status="completed",
                               error="the user declined this call")
            messages += _item_messages(declined, messages)
        else:
            messages += _item_messages(item, messages)
    return messages


def _item_messages(item: Item, so_far: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if item.type == "message":
        text = item.text
        if not text:
            return []
        return [{"role": item.role if item.role in ("system", "user", "assistant") else "user", "content": text}]
    if item.type == "function_call":
        call = {"id": item.call_id, "type": "function",
                "function": {"name": item.name, "arguments": item.arguments or "{}"}}
        last = so_far[-1] if so_far else None
        if last is not None and last["role"] == "assistant" and last.get("tool_calls"):
            last["tool_calls"].append(call)  # several calls in one answer: one assistant message
            return []
        return [{"role": "assistant", "content": None, "tool_calls": [call]}]
    if item.type == "function_call_output":
        return [{"role": "tool", "tool_call_id": item.call_id, "content": item.output or ""}]
    if item.type == "mcp_call" and item.status != "in_progress":  # run by the server: call and result
        result = item.output if item.error is None else f"The tool failed: {item.error}"
        return [{"role": "assistant", "content": None, "tool_calls": [
                    {"id": item.id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}}]},
                {"role": "tool", "tool_call_id": item.id, "content": result or ""}]
    return []


def chat_body(request: ResponseRequest, model: str, system_prompt: str, max_items: int,
              with_tools: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": chat_messages(request, system_prompt, max_items),
                            "stream": True, "stream_options": {"include_usage": True}}
    if request.max_output_tokens is not None:
        body["max_tokens"] = request.max_output_tokens
    if with_tools and request.tools:
        body["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                            "parameters": t.parameters}} for t in request.tools]
        if request.tool_choice == "function" and request.tool_name:
            body["tool_choice"] = {"type": "function", "function": {"name": request.tool_name}}
        else:
            body["tool_choice"] = request.tool_choice
    return body


class ChatStream:
    """Folds the `data:` payloads of one streamed chat completion."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, str]] = {}
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.done = False

    def feed(self, data: str) -> str:
        """One `data:` payload; returns the text it adds ("" for none)."""
        if data == "[DONE]":
            self.done = True
            return ""
        try:
            chunk = json.loads(data)
            if not isinstance(chunk, dict):
                raise TypeError("not an object")
            self._usage(chunk.get("usage"))
            choices = chunk.get("choices") or []
            if not choices:
                return ""
            choice = choices[0]
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
            delta = choice.get("delta") or {}
            for call in delta.get("tool_calls") or []:
                self._tool_delta(call)
            text = delta.get("content")
            if text is not None and not isinstance(text, str):
                raise TypeError("content is not a string")
            return text or ""
        except ResponderError:
            raise
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise ResponderError(f"chat endpoint sent an unreadable event: {data[:200]}") from None

    def _usage(self, usage: Any) -> None:
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
            details = usage.get("prompt_tokens_details") or {}
            cached = details.get("cached_tokens") if isinstance(details, dict) else 0
            self.usage = Usage(usage["prompt_tokens"], int(usage.get("completion_tokens") or 0),
                               cached if isinstance(cached, int) else 0)

    def _tool_delta(self, call: Any) -> None:
        if not isinstance(call, dict):
            raise ResponderError("chat endpoint sent a tool call that is not an object")
        index = call.get("index", len(self._calls))
        if not isinstance(index, int) or not 0 <= index < MAX_TOOL_CALLS:
            raise ResponderError(f"chat endpoint sent a tool call with index {index!r} (at most {MAX_TOOL_CALLS})")
        acc = self._calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
        fn = call.get("function") or {}
        if not isinstance(fn, dict):
            raise ResponderError("chat endpoint sent a tool call whose function is not an object")
        for key, value in (("id", call.get("id")), ("name", fn.get("name")), ("arguments", fn.get("arguments"))):
            if value is None:
                continue
            if not isinstance(value, str):
                raise ResponderError(f"chat endpoint sent a tool call whose {key} is not a string")
            # Names and ids come whole in the first delta (OpenAI); some servers repeat them.
            acc[key] = acc[key] + value if key == "arguments" else (value if value != acc[key] else acc[key])
        if len(acc["arguments"]) > MAX_ARGUMENTS_CHARS:
            raise ResponderError(f"chat endpoint sent tool call arguments over {MAX_ARGUMENTS_CHARS} characters")

    def tool_calls(self) -> list[ToolCall]:
        """The calls the answer made, checked: a name, and arguments that are a JSON object."""
        out = []
        for index in sorted(self._calls):
            acc = self._calls[index]
            if not acc["name"]:
                raise ResponderError(f"chat endpoint sent tool call {index} without a function name")
            args = acc["arguments"].strip() or "{}"
            try:
                parsed = json.loads(args)
            except ValueError:
                raise ResponderError(f"chat endpoint sent tool call {acc['name']!r} with arguments that are not "
                                     f"JSON: {args[:200]}") from None
            if not isinstance(parsed, dict):
                raise ResponderError(f"chat endpoint sent tool call {acc['name']!r} with arguments that are not "
                                     "a JSON object")
            out.append(ToolCall(acc["name"], args, acc["id"]))
        return out
