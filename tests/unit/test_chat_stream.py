"""The chat-completions request a conversation becomes, and the streamed answer folded (pure)."""

from __future__ import annotations

import json

import pytest

from kombain.server.chat_stream import ChatStream, chat_body, chat_messages
from kombain.streaming.items import Item, message
from kombain.streaming.responders import ResponderError, ResponseRequest, Tool, ToolCall, Usage


def chunk(delta: dict, finish: str | None = None) -> str:
    return json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def test_tool_call_deltas_fold_into_calls_text_and_usage() -> None:
    s = ChatStream()
    assert s.feed(chunk({"role": "assistant", "content": "Let me check."})) == "Let me check."
    s.feed(chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                  "function": {"name": "get_weather", "arguments": ""}}]}))
    s.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}))
    s.feed(chunk({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "get_time", "arguments": "{}"}}]}))
    s.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "\"Oslo\"}"}}]}, "tool_calls"))
    s.feed(json.dumps({"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 12,
                                                "prompt_tokens_details": {"cached_tokens": 8}}}))
    assert s.feed("[DONE]") == "" and s.done
    assert s.tool_calls() == [ToolCall("get_weather", '{"city": "Oslo"}', "call_a"), ToolCall("get_time", "{}", "call_b")]
    assert s.usage == Usage(30, 12, 8) and s.finish_reason == "tool_calls"


@pytest.mark.parametrize("data", [
    "not json", json.dumps([1]), chunk({"content": 5}), chunk({"tool_calls": ["x"]}),
    chunk({"tool_calls": [{"index": 99, "function": {"name": "f"}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"name": 3}}]}),
])
def test_unreadable_events_are_responder_errors(data: str) -> None:
    with pytest.raises(ResponderError):
        ChatStream().feed(data)


@pytest.mark.parametrize(("name", "arguments"), [("", "{}"), ("f", "{\"cut"), ("f", "[1, 2]")])
def test_malformed_tool_calls_are_responder_errors(name: str, arguments: str) -> None:
    s = ChatStream()
    s.feed(chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": name, "arguments": arguments}}]}))
    with pytest.raises(ResponderError):
        s.tool_calls()


def test_items_become_chat_messages() -> None:
    items = (
        Item("o", "function_call_output", call_id="stale", output="lost"),  # its call fell out of the window
        message("system", "The caller is in Norway."),
        message("user", "Weather in Oslo and Paris?"),
        Item("c1", "function_call", call_id="call_1", name="get_weather", arguments='{"city": "Oslo"}'),
        Item("c2", "function_call", call_id="call_2", name="get_weather", arguments='{"city": "Paris"}'),
        Item("o1", "function_call_output", call_id="call_1", output="sunny"),
        Item("o2", "function_call_output", call_id="call_2", output="rain"),
        message("assistant", ""),  # a reply nobody heard: nothing to send
    )
    msgs = chat_messages(ResponseRequest(items, "Be brief."), "default prompt", 40)
    assert msgs[0] == {"role": "system", "content": "Be brief."}
    assert msgs[1:3] == [{"role": "system", "content": "The caller is in Norway."},
                         {"role": "user", "content": "Weather in Oslo and Paris?"}]
    assert [c["id"] for c in msgs[3]["tool_calls"]] == ["call_1", "call_2"] and msgs[3]["role"] == "assistant"
    assert msgs[4:] == [{"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                        {"role": "tool", "tool_call_id": "call_2", "content": "rain"}]


def test_body_carries_tools_choice_and_limit() -> None:
    tool = Tool("get_weather", "Weather", {"type": "object", "properties": {"city": {"type": "string"}}})
    req = ResponseRequest((message("user", "hi"),), tools=(tool,), tool_choice="function", tool_name="get_weather",
                          max_output_tokens=50)
    body = chat_body(req, "m", "p", 40)
    assert body["tools"][0] == {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                                                 "parameters": tool.parameters}}
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["max_tokens"] == 50 and body["stream"] is True
    plain = chat_body(req, "m", "p", 40, with_tools=False)
    assert "tools" not in plain and "tool_choice" not in plain
