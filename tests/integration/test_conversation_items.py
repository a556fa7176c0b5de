"""Conversation items over the realtime WebSocket (echo responder): typed turns, retrieve, delete,
truncate, text-only and out-of-band responses, metadata, usage, and bad input that leaves the
session going."""

from __future__ import annotations

import pytest
import websockets

from tests.integration.helpers import RawSession, open_session

pytestmark = pytest.mark.asyncio


def user_text(text: str, **extra: object) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}], **extra}


async def reply_to(s: RawSession, response: dict | None = None) -> dict:
    before = len(s.of("response.done"))
    await s.send({"type": "response.create", **({"response": response} if response is not None else {})})
    return (await s.wait_for("response.done", before + 1, timeout=30))[-1]["response"]


async def test_typed_turn_items_and_spoken_reply(live_server):
    s = await open_session(live_server.ws_url, turn_detection=None)
    try:
        await s.send({"type": "conversation.item.create", "item": user_text("hello there", id="item_typed1")})
        added = (await s.wait_for("conversation.item.added"))[0]
        done = (await s.wait_for("conversation.item.done"))[0]
        assert added["item"]["id"] == done["item"]["id"] == "item_typed1"
        assert added["item"]["content"] == [{"type": "input_text", "text": "hello there"}]
        resp = await reply_to(s)
        assert resp["status"] == "completed"
        message = resp["output"][0]
        assert message["role"] == "assistant" and message["content"][0]["type"] == "output_audio"
        assert message["content"][0]["transcript"] == "You said: hello there"
        assert resp["usage"]["output_token_details"]["audio_tokens"] > 0 and resp["usage"]["total_tokens"] > 0
        types = [e["type"] for e in s.events]
        # GA order: the output item is announced, joins the conversation, then its content part.
        first = types.index("response.output_item.added")
        assert types[first:first + 3] == ["response.output_item.added", "conversation.item.added",
                                          "response.content_part.added"]
        last = types.index("response.output_item.done")
        assert types[last + 1] == "conversation.item.done"
        assert types.index("response.created") < first < last < types.index("response.done")
        # The assistant item is in the conversation, after the typed one.
        assert s.of("conversation.item.added")[1]["previous_item_id"] == "item_typed1"
        await s.send({"type": "conversation.item.retrieve", "item_id": message["id"]})
        got = (await s.wait_for("conversation.item.retrieved"))[0]["item"]
        assert got["content"][0]["transcript"] == "You said: hello there"
        # Delete the typed turn; a second delete or retrieve of it is item_not_found.
        await s.send({"type": "conversation.item.delete", "item_id": "item_typed1"})
        assert (await s.wait_for("conversation.item.deleted"))[0]["item_id"] == "item_typed1"
        await s.send({"type": "conversation.item.retrieve", "item_id": "item_typed1", "event_id": "ev1"})
        err = (await s.wait_for("error"))[0]["error"]
        assert err["code"] == "item_not_found" and err["event_id"] == "ev1"
        # Inserted at the start ("root"): first in the conversation, so the last user turn is still
        # the one typed after it.
        await s.send({"type": "conversation.item.create", "previous_item_id": "root",
                      "item": user_text("first of all")})
        assert (await s.wait_for("conversation.item.added", 3))[-1]["previous_item_id"] is None
        await s.send({"type": "conversation.item.create", "item": user_text("and then this")})
        await s.wait_for("conversation.item.done", 4)
        resp = await reply_to(s, {"output_modalities": ["text"]})
        assert resp["output"][0]["content"][0]["text"] == "You said: and then this"
    finally:
        await s.close()


async def test_text_only_response_metadata_and_out_of_band(live_server):
    s = await open_session(live_server.ws_url, turn_detection=None)
    try:
        await s.send({"type": "conversation.item.create", "item": user_text("write this")})
        await s.wait_for("conversation.item.done")
        resp = await reply_to(s, {"output_modalities": ["text"], "metadata": {"topic": "greeting"}})
        assert resp["status"] == "completed" and resp["metadata"] == {"topic": "greeting"}
        assert resp["output_modalities"] == ["text"]
        assert s.of("response.created")[0]["response"]["metadata"] == {"topic": "greeting"}
        assert "".join(e["delta"] for e in s.of("response.output_text.delta")) == "You said: write this"
        assert s.of("response.output_text.done")[0]["text"] == "You said: write this"
        assert resp["output"][0]["content"] == [{"type": "output_text", "text": "You said: write this"}]
        assert not s.of("response.output_audio.delta") and not s.of("response.output_audio_transcript.delta")
        assert resp["usage"]["output_token_details"] == {"text_tokens": 5, "audio_tokens": 0}
        # Out of band: its own input, nothing added to the conversation.
        items_before = len(s.of("conversation.item.added"))
        oob = await reply_to(s, {"conversation": "none", "output_modalities": ["text"], "metadata": {"kind": "oob"},
                                 "input": [user_text("side question")]})
        assert oob["conversation_id"] is None and oob["metadata"] == {"kind": "oob"}
        assert oob["output"][0]["content"][0]["text"] == "You said: side question"
        assert len(s.of("conversation.item.added")) == items_before
        await s.send({"type": "conversation.item.retrieve", "item_id": oob["output"][0]["id"]})
        assert (await s.wait_for("error"))[0]["error"]["code"] == "item_not_found"
        # max_output_tokens cuts the reply (estimated at 4 characters a token): incomplete.
        cut = await reply_to(s, {"output_modalities": ["text"], "max_output_tokens": 2})
        assert cut["status"] == "incomplete" and cut["status_details"]["reason"] == "max_output_tokens"
        assert cut["output"][0]["content"][0]["text"] == "You said"
    finally:
        await s.close()


async def test_function_call_items_and_truncate(live_server):
    s = await open_session(live_server.ws_url, turn_detection=None)
    try:
        await s.send({"type": "conversation.item.create", "item": {
            "type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{\"city\": \"Oslo\"}"}})
        await s.send({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": "call_1", "output": "sunny and mild"}})
        await s.wait_for("conversation.item.done", 2)
        resp = await reply_to(s)
        transcript = resp["output"][0]["content"][0]["transcript"]
        assert transcript == "The tool returned: sunny and mild"
        sent_ms = resp["kombain"]["audio_sent_ms"]
        item_id = resp["output"][0]["id"]
        # Truncate at half: what was heard of the transcript stays.
        await s.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                      "audio_end_ms": sent_ms // 2})
        truncated = (await s.wait_for("conversation.item.truncated"))[0]
        assert truncated["audio_end_ms"] == sent_ms // 2
        await s.send({"type": "conversation.item.retrieve", "item_id": item_id})
        heard = (await s.wait_for("conversation.item.retrieved"))[0]["item"]["content"][0]["transcript"]
        assert heard and transcript.startswith(heard) and len(heard) < len(transcript)
        # Beyond the audio sent: an error, the record stays.
        await s.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                      "audio_end_ms": sent_ms + 5000})
        err = (await s.wait_for("error"))[0]["error"]
        assert err["code"] == "invalid_value" and err["param"] == "audio_end_ms"
    finally:
        await s.close()


async def test_beta_dialect_and_transcription_intent(live_server):
    # A beta client gets conversation.item.created and beta part and event names.
    s = await open_session(live_server.ws_url, input_audio_format="pcm16", turn_detection=None)
    try:
        await s.send({"type": "conversation.item.create", "item": user_text("old style")})
        created = (await s.wait_for("conversation.item.created"))[0]
        assert created["item"]["content"] == [{"type": "input_text", "text": "old style"}]
        resp = await reply_to(s, {"modalities": ["text"]})
        assert resp["output"][0]["content"] == [{"type": "text", "text": "You said: old style"}]
        assert s.of("response.text.done")[0]["text"] == "You said: old style"
        assert not s.of("conversation.item.added") and not s.of("conversation.item.done")
    finally:
        await s.close()
    # ?intent=transcription: a transcription session, which keeps no conversation.
    ws = await websockets.connect(live_server.ws_url + "/v1/realtime?intent=transcription")
    t = RawSession(ws)
    try:
        assert (await t.wait_for("session.created"))[0]["session"]["type"] == "transcription"
        await t.send({"type": "conversation.item.create", "item": user_text("hello")})
        assert (await t.wait_for("error"))[0]["error"]["code"] == "responses_unavailable"
    finally:
        await t.close()


async def test_idle_timeout_prompts_a_response(live_server):
    s = await open_session(live_server.ws_url, turn_detection={"type": "server_vad", "idle_timeout_ms": 1000})
    try:
        assert s.of("session.updated")[0]["session"]["audio"]["input"]["turn_detection"]["idle_timeout_ms"] == 1000
        await s.append(bytes(24000 * 2 * 2), 4800, speed=1.0, rate=24000)  # two seconds of silence
        timeout = (await s.wait_for("input_audio_buffer.timeout_triggered", timeout=10))[0]
        await s.wait_for("response.done", timeout=10)
        types = [e["type"] for e in s.events]
        at = types.index("input_audio_buffer.timeout_triggered")
        assert types[at + 1:at + 4] == ["input_audio_buffer.committed", "conversation.item.added",
                                        "conversation.item.done"]
        assert s.events[at + 1]["item_id"] == timeout["item_id"] == s.events[at + 2]["item"]["id"]
        assert 0 <= timeout["audio_start_ms"] < timeout["audio_end_ms"] <= 2100
        assert types.index("response.created") > at and not s.of("error")
    finally:
        await s.close()


@pytest.mark.parametrize(("event", "code", "param"), [
    ({"type": "session.update", "session": {"audio": {"input": {"turn_detection": {
        "type": "semantic_vad", "idle_timeout_ms": 5000}}}}},
     "invalid_value", "session.audio.input.turn_detection.idle_timeout_ms"),
    ({"type": "session.update", "session": {"audio": {"input": {"turn_detection": {
        "type": "server_vad", "idle_timeout_ms": 50}}}}},
     "invalid_value", "session.audio.input.turn_detection.idle_timeout_ms"),
    ({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": "hi"}},
     "invalid_value", "item.content"),
    ({"type": "conversation.item.create", "item": {"type": "message", "role": "robot",
                                                   "content": [{"type": "input_text", "text": "x"}]}},
     "invalid_value", "item.role"),
    ({"type": "conversation.item.create", "item": {"type": "weird"}}, "invalid_value", "item.type"),
    ({"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "nope",
                                                   "output": "x"}}, "invalid_value", "item.call_id"),
    ({"type": "conversation.item.create", "previous_item_id": "item_missing",
      "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}},
     "item_not_found", "previous_item_id"),
    ({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                                   "content": [{"type": "input_text", "text": "x" * 40000}]}},
     "invalid_value", "item.content[0].text"),
    ({"type": "conversation.item.delete", "item_id": "item_missing"}, "item_not_found", "item_id"),
    ({"type": "conversation.item.truncate", "item_id": "item_missing", "content_index": 0, "audio_end_ms": 10},
     "item_not_found", "item_id"),
    ({"type": "session.update", "session": {"tools": [{"type": "function", "name": "bad name!"}]}},
     "invalid_value", "session.tools[0].name"),
    ({"type": "session.update", "session": {"tools": [{"type": "function", "name": "f",
                                                       "parameters": {"type": "string"}}]}},
     "invalid_value", "session.tools[0].parameters.type"),
    ({"type": "session.update", "session": {"tool_choice": {"type": "function", "name": "absent"}}},
     "invalid_value", "session.tool_choice.name"),
    ({"type": "response.create", "response": {"output_modalities": ["video"]}},
     "invalid_value", "response.output_modalities"),
    ({"type": "response.create", "response": {"metadata": {"k": 5}}}, "invalid_value", "response.metadata"),
    ({"type": "response.create", "response": {"conversation": "other"}}, "invalid_value", "response.conversation"),
    ({"type": "response.create", "response": {"conversation": "none",
                                              "input": [{"type": "item_reference", "id": "item_missing"}]}},
     "item_not_found", "response.input[0].id"),
])
async def test_bad_items_get_error_events_and_the_session_goes_on(live_server, event, code, param):
    s = await open_session(live_server.ws_url, turn_detection=None)
    try:
        await s.send(event)
        err = (await s.wait_for("error"))[0]["error"]
        assert (err["code"], err["param"]) == (code, param), err
        await s.send({"type": "conversation.item.create", "item": user_text("still here")})
        resp = await reply_to(s, {"output_modalities": ["text"]})
        assert resp["output"][0]["content"][0]["text"] == "You said: still here"
    finally:
        await s.close()
