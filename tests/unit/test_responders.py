"""Responders as pure logic: the IVR script walker and the echo responder (no I/O)."""

from __future__ import annotations

import asyncio

import pytest

from kombain.streaming.responders import EchoResponder, IvrScript, Reply, ScriptResponder
from tests.conftest import ROOT

MENU = {
    "start": "welcome",
    "max_fallbacks": 1,
    "goodbye": "Bye now.",
    "nodes": {
        "welcome": {"say": "Say balance or agent.", "routes": [
            {"keywords": ["balance"], "goto": "balance"},
            {"keywords": ["talk to a human"], "goto": "agent"}]},
        "balance": {"say": "You have ten dollars.", "next": "more"},
        "more": {"say": "Anything else?", "routes": [{"keywords": ["no"], "goto": "bye"}]},
        "agent": {"say": "Connecting.", "hangup": True},
        "bye": {"say": "Goodbye.", "hangup": True},
    },
}


def said(responder: ScriptResponder, text: str) -> list[Reply]:
    async def collect() -> list[Reply]:
        return [r async for r in responder.respond(text, [], "")]

    return asyncio.run(collect())


def test_script_walks_routes_next_and_hangup() -> None:
    r = ScriptResponder(IvrScript.from_dict(MENU))
    assert [x.text for x in r.start()] == ["Say balance or agent."]
    replies = said(r, "What's my Balance?")
    assert [x.text for x in replies] == ["You have ten dollars.", " Anything else?"]  # `next` chains
    assert r.node == "more"
    bye = said(r, "no thanks")
    assert bye == [Reply("Goodbye.", hangup=True)]


def test_script_phrase_keywords_and_fallbacks() -> None:
    r = ScriptResponder(IvrScript.from_dict(MENU))
    assert said(r, "I want to talk to a human please")[0] == Reply("Connecting.", hangup=True)
    r = ScriptResponder(IvrScript.from_dict(MENU))
    first = said(r, "banana")
    assert "did not catch" in first[0].text and not first[0].hangup
    assert said(r, "banana again") == [Reply("Bye now.", hangup=True)]  # past max_fallbacks


@pytest.mark.parametrize("bad", [
    {}, {"nodes": {"a": {"say": 3}}}, {"start": "x", "nodes": {"a": {"say": "hi"}}},
    {"nodes": {"a": {"say": "hi", "routes": [{"keywords": ["k"], "goto": "missing"}]}}},
])
def test_invalid_scripts_are_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        IvrScript.from_dict(bad)


def test_example_menu_loads() -> None:
    script = IvrScript.load(ROOT / "examples" / "ivr_menu.yaml")
    assert script.start in script.nodes


def test_echo() -> None:
    async def collect(text: str) -> list[Reply]:
        return [r async for r in EchoResponder().respond(text, [], "")]

    assert asyncio.run(collect("hello there")) == [Reply("You said: hello there")]
    assert asyncio.run(collect("   ")) == []
