"""Conversation items, tools and response options as the Realtime protocol writes them, sans I/O:
client JSON -> checked, bounded streaming objects; items -> the JSON the server sends."""

from __future__ import annotations

import json
import re
from typing import Any

from kombain.server.mcp_tools import McpServer
from kombain.server.transports.openai_realtime.protocol import ProtocolError
from kombain.streaming.conversation_events import ResponseOptions
from kombain.streaming.items import (
    MAX_OUTPUT_CHARS,
    MAX_PARTS,
    MAX_TEXT_CHARS,
    Item,
    ItemError,
    Items,
    Part,
    new_item_id,
)
from kombain.streaming.responders import Tool

MAX_TOOLS = 64
MAX_TOOLS_JSON = 64_000  # characters of all tool definitions together
MAX_INSTRUCTIONS = 20_000
MAX_INPUT_ITEMS = 64  # in an out-of-band response.create
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_USER_PARTS = {"input_text": "text", "input_audio": "transcript"}
_ASSISTANT_PARTS = {"output_text": "text", "output_audio": "transcript", "text": "text", "audio": "transcript"}
_BETA_PART = {"output_text": "text", "output_audio": "audio"}


def _bad(message: str, param: str, code: str = "invalid_value") -> ProtocolError:
    return ProtocolError(message, code, param)


def _str(value: Any, param: str, limit: int, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise _bad(f"{param} must be a string", param)
    if len(value) > limit:
        raise _bad(f"{param} is longer than {limit} characters", param)
    return value


# --- client items ----------------------------------------------------------------------------------

def parse_item(raw: Any, param: str = "item") -> Item:
    """A `conversation.item.create` item (or one in `response.input`), checked and bounded."""
    if not isinstance(raw, dict):
        raise _bad(f"{param} must be an object", param)
    kind = raw.get("type")
    item_id = raw.get("id")
    if item_id is not None and not (isinstance(item_id, str) and _ID.match(item_id)):
        raise _bad(f"{param}.id must be up to 64 letters, digits, '_', '-', '.' or ':'", f"{param}.id")
    item_id = item_id or new_item_id()
    if kind == "message":
        return _message(raw, item_id, param)
    if kind == "function_call":
        name = _str(raw.get("name"), f"{param}.name", 64, required=True) or ""
        if not _NAME.match(name):
            raise _bad(f"{param}.name must be 1 to 64 letters, digits, '_' or '-'", f"{param}.name")
        arguments = _str(raw.get("arguments", "{}"), f"{param}.arguments", MAX_TEXT_CHARS) or "{}"
        call_id = _str(raw.get("call_id"), f"{param}.call_id", 64) or "call_" + item_id[-16:]
        return Item(item_id, "function_call", call_id=call_id, name=name, arguments=arguments)
    if kind == "mcp_approval_response":
        request_id = _str(raw.get("approval_request_id"), f"{param}.approval_request_id", 64, required=True)
        if not isinstance(raw.get("approve"), bool):
            raise _bad(f"{param}.approve must be true or false", f"{param}.approve")
        return Item(item_id, "mcp_approval_response", approval_request_id=request_id, approve=raw["approve"],
                    output=_str(raw.get("reason"), f"{param}.reason", 2000))
    if kind == "function_call_output":
        answers = _str(raw.get("call_id"), f"{param}.call_id", 64, required=True)
        output = _str(raw.get("output", ""), f"{param}.output", MAX_OUTPUT_CHARS) or ""
        return Item(item_id, "function_call_output", call_id=answers, output=output)
    raise _bad(f"{param}.type must be message, function_call, function_call_output or mcp_approval_response, "
               f"not {kind!r}", f"{param}.type")


def _message(raw: dict[str, Any], item_id: str, param: str) -> Item:
    role = raw.get("role")
    if role not in ("system", "user", "assistant"):
        raise _bad(f"{param}.role must be system, user or assistant", f"{param}.role")
    content = raw.get("content")
    if not isinstance(content, list) or not content:
        raise _bad(f"{param}.content must be a non-empty list of parts", f"{param}.content")
    if len(content) > MAX_PARTS:
        raise _bad(f"{param}.content has more than {MAX_PARTS} parts", f"{param}.content")
    allowed = _ASSISTANT_PARTS if role == "assistant" else (_USER_PARTS if role == "user" else {"input_text": "text"})
    parts = []
    for i, p in enumerate(content):
        where = f"{param}.content[{i}]"
        if not isinstance(p, dict) or p.get("type") not in allowed:
            raise _bad(f"{where}.type must be one of {', '.join(sorted(allowed))} for a {role} message",
                       f"{where}.type")
        kind = str({"text": "output_text", "audio": "output_audio"}.get(p["type"], p["type"]))
        field = allowed[p["type"]]
        words = _str(p.get(field), f"{where}.{field}", MAX_TEXT_CHARS, required=field == "text") or ""
        if p.get("audio") is not None:
            # Audio bytes in an item are not decoded: the transcript (if any) stands for them.
            _str(p.get("audio"), f"{where}.audio", 4 * MAX_TEXT_CHARS)
        parts.append(Part(kind, text=words if field == "text" else None,
                          transcript=words if field == "transcript" else None))
    return Item(item_id, "message", role, parts)


def parse_input(raw: Any, items: Items) -> tuple[Item, ...]:
    """`response.input`: items, or `{"type": "item_reference", "id": ...}` to ones in the conversation."""
    if not isinstance(raw, list):
        raise _bad("response.input must be a list of items", "response.input")
    if len(raw) > MAX_INPUT_ITEMS:
        raise _bad(f"response.input has more than {MAX_INPUT_ITEMS} items", "response.input")
    out = []
    for i, entry in enumerate(raw):
        if isinstance(entry, dict) and entry.get("type") == "item_reference":
            try:
                out.append(items.get(str(entry.get("id"))).copy())
            except ItemError as exc:
                raise ProtocolError(str(exc), exc.code, f"response.input[{i}].id") from None
        else:
            out.append(parse_item(entry, f"response.input[{i}]"))
    return tuple(out)


# --- tools -----------------------------------------------------------------------------------------

def parse_tools(raw: Any, param: str, *, mcp: bool = True) -> tuple[Tool, ...]:
    """The function tools of a tools list (`mcp`: MCP entries are allowed, and left to parse_mcp)."""
    if not isinstance(raw, list):
        raise _bad(f"{param} must be a list", param)
    if len(raw) > MAX_TOOLS:
        raise _bad(f"{param} has more than {MAX_TOOLS} tools", param)
    if len(json.dumps(raw)) > MAX_TOOLS_JSON:
        raise _bad(f"{param} is over {MAX_TOOLS_JSON} characters of JSON", param)
    tools: list[Tool] = []
    for i, t in enumerate(raw):
        where = f"{param}[{i}]"
        if not isinstance(t, dict):
            raise _bad(f"{where} must be an object", where)
        kind = t.get("type", "function")
        if kind == "mcp":
            if not mcp:
                raise _bad(f"{where}: MCP tools are set for the session (session.update), not per response",
                           f"{where}.type")
            continue  # parse_mcp reads these
        if kind != "function":
            raise _bad(f"{where}.type must be 'function'", f"{where}.type")
        name = t.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise _bad(f"{where}.name must be 1 to 64 letters, digits, '_' or '-'", f"{where}.name")
        if any(x.name == name for x in tools):
            raise _bad(f"{where}.name {name!r} is used twice", f"{where}.name")
        description = _str(t.get("description", ""), f"{where}.description", 4000) or ""
        params = t.get("parameters", {"type": "object", "properties": {}})
        _check_schema(params, f"{where}.parameters")
        tools.append(Tool(name, description, params))
    return tuple(tools)


def parse_mcp(raw: Any, param: str, allowed_urls: tuple[str, ...]) -> tuple[McpServer, ...]:
    """The `type: "mcp"` tools of a session's tools list; their URLs must start with an allowed prefix."""
    servers: list[McpServer] = []
    for i, t in enumerate(raw if isinstance(raw, list) else []):
        if not isinstance(t, dict) or t.get("type") != "mcp":
            continue
        where = f"{param}[{i}]"
        label = t.get("server_label")
        if not isinstance(label, str) or not _NAME.match(label) or any(s.label == label for s in servers):
            raise _bad(f"{where}.server_label must be a unique name of 1 to 64 letters, digits, '_' or '-'",
                       f"{where}.server_label")
        url = _str(t.get("server_url"), f"{where}.server_url", 2000, required=True) or ""
        if not url.startswith(("http://", "https://")):
            raise _bad(f"{where}.server_url must be an http(s) URL", f"{where}.server_url")
        if not any(url.startswith(prefix) for prefix in allowed_urls):
            raise _bad(f"{where}.server_url is not among the MCP servers this node may call "
                       "(KOMBAIN_MCP_ALLOWED_URLS)", f"{where}.server_url")
        headers = t.get("headers") or {}
        if not isinstance(headers, dict) or len(headers) > 32 or not all(
                isinstance(k, str) and isinstance(v, str) and len(k) <= 256 and len(v) <= 4096
                for k, v in headers.items()):
            raise _bad(f"{where}.headers must map up to 32 names to strings", f"{where}.headers")
        allowed = t.get("allowed_tools")
        if isinstance(allowed, dict):
            allowed = allowed.get("tool_names")
        if allowed is not None and (not isinstance(allowed, list) or not all(isinstance(n, str) for n in allowed)):
            raise _bad(f"{where}.allowed_tools must be a list of tool names", f"{where}.allowed_tools")
        approval = t.get("require_approval", "always")
        if approval not in ("always", "never"):
            raise _bad(f"{where}.require_approval must be \"always\" or \"never\"", f"{where}.require_approval")
        servers.append(McpServer(label, url, tuple(headers.items()), tuple(allowed) if allowed is not None else None,
                                 approval))
    return tuple(servers)


def _check_schema(schema: Any, param: str) -> None:
    """A function's parameters: a JSON Schema object (checked for its shape, not every keyword)."""
    if not isinstance(schema, dict):
        raise _bad(f"{param} must be a JSON Schema object", param)
    if schema.get("type", "object") != "object":
        raise _bad(f"{param}.type must be 'object'", f"{param}.type")
    props = schema.get("properties", {})
    if not isinstance(props, dict) or not all(isinstance(v, dict | bool) for v in props.values()):
        raise _bad(f"{param}.properties must map names to schemas", f"{param}.properties")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise _bad(f"{param}.required must be a list of names", f"{param}.required")


def parse_tool_choice(raw: Any, param: str, tools: tuple[Tool, ...]) -> tuple[str, str | None]:
    """`auto` / `none` / `required`, or `{"type": "function", "name": ...}`: (choice, name)."""
    if raw in ("auto", "none", "required"):
        return raw, None
    if isinstance(raw, dict) and raw.get("type") == "function":
        name = raw.get("name")
        if not isinstance(name, str) or not any(t.name == name for t in tools):
            raise _bad(f"{param}.name must name one of the tools", f"{param}.name")
        return "function", name
    raise _bad(f"{param} must be auto, none, required or {{type: function, name}}", param)


# --- response.create ---------------------------------------------------------------------------------

def parse_metadata(raw: Any) -> dict[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or len(raw) > 16:
        raise _bad("response.metadata must be an object of at most 16 keys", "response.metadata")
    for k, v in raw.items():
        if len(k) > 64 or not isinstance(v, str) or len(v) > 512:
            raise _bad("response.metadata keys are at most 64 characters, values strings of at most 512",
                       "response.metadata")
    return dict(raw)


def parse_modalities(raw: Any, param: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw or any(m not in ("text", "audio") for m in raw):
        raise _bad(f"{param} must be [\"audio\"] or [\"text\"]", param)
    return ("audio",) if "audio" in raw else ("text",)


def parse_max_tokens(raw: Any, param: str) -> int | None:
    if raw is None or raw == "inf":
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= 4096:
        raise _bad(f"{param} must be an integer from 1 to 4096, or \"inf\"", param)
    return raw


def parse_response(resp: dict[str, Any], items: Items, session_tools: tuple[Tool, ...]) -> ResponseOptions:
    """The `response` of a `response.create`, as options for one response."""
    instructions = _str(resp.get("instructions"), "response.instructions", MAX_INSTRUCTIONS)
    conversation = resp.get("conversation", "auto")
    if conversation not in ("auto", "none", None):
        raise _bad("response.conversation must be \"auto\" or \"none\"", "response.conversation")
    in_conversation = conversation != "none"
    context = parse_input(resp["input"], items) if resp.get("input") is not None else None
    tools = parse_tools(resp["tools"], "response.tools", mcp=False) if resp.get("tools") is not None else None
    choice, name = (None, None)
    if resp.get("tool_choice") is not None:
        choice, name = parse_tool_choice(resp["tool_choice"], "response.tool_choice",
                                         tools if tools is not None else session_tools)
    modalities = None
    if resp.get("output_modalities", resp.get("modalities")) is not None:
        modalities = parse_modalities(resp.get("output_modalities", resp.get("modalities")),
                                      "response.output_modalities")
    return ResponseOptions(
        instructions=instructions, modalities=modalities, in_conversation=in_conversation, input=context,
        tools=tools, tool_choice=choice, tool_name=name,
        max_output_tokens=parse_max_tokens(resp.get("max_output_tokens", resp.get("max_response_output_tokens")),
                                           "response.max_output_tokens"),
        metadata=parse_metadata(resp.get("metadata")),
    )


# --- server items ------------------------------------------------------------------------------------

def item_json(item: Item, beta: bool = False) -> dict[str, Any]:
    """An item as the server reports it (audio bytes are never echoed)."""
    out: dict[str, Any] = {"id": item.id, "object": "realtime.item", "type": item.type, "status": item.status}
    if item.type == "message":
        out["role"] = item.role
        out["content"] = [_part_json(p, beta) for p in item.content]
    elif item.type == "function_call":
        out.update(call_id=item.call_id, name=item.name, arguments=item.arguments or "")
    elif item.type == "function_call_output":
        out.update(call_id=item.call_id, output=item.output or "")
    elif item.type == "mcp_call":
        error = None if item.error is None else {"type": "tool_execution_error", "message": item.error}
        out.update(server_label=item.server_label, name=item.name, arguments=item.arguments or "",
                   output=item.output, error=error, approval_request_id=item.approval_request_id)
    elif item.type == "mcp_approval_request":
        out.update(server_label=item.server_label, name=item.name, arguments=item.arguments or "")
    elif item.type == "mcp_approval_response":
        out.update(approval_request_id=item.approval_request_id, approve=item.approve, reason=item.output)
    elif item.type == "mcp_list_tools":
        out.update(server_label=item.server_label, tools=item.tools or [])
    return out


def _part_json(part: Part, beta: bool) -> dict[str, Any]:
    kind = _BETA_PART.get(part.type, part.type) if beta else part.type
    if part.type in ("input_text", "output_text"):
        return {"type": kind, "text": part.text or ""}
    if part.type == "input_audio":
        return {"type": kind, "audio": None, "transcript": part.transcript}
    return {"type": kind, "audio": None, "transcript": part.transcript or ""}
