"""Responders as pure logic: the IVR script walker (speech and keys) and the echo responder
(no I/O; time is passed in, never slept)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from kombain.server.llm import OpenAIResponder
from kombain.streaming.responders import (
    EchoResponder,
    IvrScript,
    Reply,
    ResponseRequest,
    ScriptResponder,
    fill_prompt,
)
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
        return [r async for r in responder.respond(ResponseRequest.of_text(text))]

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
        return [r async for r in EchoResponder().respond(ResponseRequest.of_text(text))]

    assert asyncio.run(collect("hello there")) == [Reply("You said: hello there")]
    assert asyncio.run(collect("   ")) == []


# --- keys (DTMF) -------------------------------------------------------------------------------

KEYS = {
    "start": "menu",
    "max_fallbacks": 1,
    "goodbye": "Bye now.",
    "back_key": "9",
    "digit_timeout_s": 2,
    "nodes": {
        "menu": {"say": "Press 1, 11 or 2.", "routes": [
            {"digits": "1", "goto": "one"},
            {"digits": "11", "keywords": ["eleven"], "goto": "eleven"},
            {"digits": "2", "goto": "pin"}]},
        "one": {"say": "One.", "next": "menu"},
        "eleven": {"say": "Eleven.", "routes": [{"keywords": ["ok"], "goto": "menu"}]},
        "pin": {"say": "Enter your pin.", "collect": {
            "digits": 4, "terminator": "#", "timeout_s": 5, "goto": "got", "timeout_goto": "slow"},
            "routes": [{"keywords": ["agent"], "goto": "agent"}]},
        "got": {"say": "PIN {digits}, that is {digits_spaced}. {name} {0} {", "hangup": True},
        "slow": {"say": "Too slow after {digits}.", "hangup": True},
        "agent": {"say": "Connecting.", "hangup": True},
    },
}


def keys(clock: float = 0.0) -> ScriptResponder:
    r = ScriptResponder(IvrScript.from_dict(KEYS), clock=lambda: clock)
    r.start()
    return r


def texts(replies: Sequence[Reply] | None) -> list[str] | None:
    return None if replies is None else [x.text for x in replies]


def first(replies: Sequence[Reply] | None) -> str:
    assert replies, "expected something to be said"
    return replies[0].text


def test_single_key_route_without_a_wait() -> None:
    r = keys()
    assert texts(r.dtmf("2", 1.0)) == ["Enter your pin."] and r.node == "pin"


def test_multi_key_route_waits_for_the_next_key_or_the_deadline() -> None:
    r = keys()
    assert r.dtmf("1", 1.0) is None  # "1" or "11"? wait for more
    assert r.dtmf_deadline() == 3.0
    assert texts(r.dtmf("1", 2.0)) == ["Eleven."] and r.dtmf_deadline() is None
    r = keys()
    assert r.dtmf("1", 1.0) is None
    assert r.poll(2.9) is None  # too early: nothing happens
    assert texts(r.poll(3.0)) == ["One.", "Press 1, 11 or 2."]  # `next` chains back to the menu
    assert r.node == "menu" and r.dtmf_deadline() is None
    r = keys()
    assert r.dtmf("1", 1.0) is None
    assert "did not catch" in first(r.dtmf("3", 1.5))  # "13" is no route: a miss


def test_collect_with_terminator_and_substitution() -> None:
    r = keys()
    r.dtmf("2", 0.0)
    assert r.dtmf("4", 1.0) is None and r.dtmf("2", 2.0) is None
    assert r.dtmf_deadline() == 7.0  # timeout_s after the last key
    assert r.dtmf("#", 3.0) == [Reply("PIN 42, that is 4 2. {name} {0} {", hangup=True)]
    assert r.digits == "42" and r.dtmf_deadline() is None
    assert r.dtmf("1", 4.0) is None  # hung up: keys are ignored


def test_collect_ends_when_the_count_is_reached() -> None:
    r = keys()
    r.dtmf("2", 0.0)
    assert [r.dtmf(k, 1.0) for k in "123"] == [None, None, None]
    assert texts(r.dtmf("4", 1.5)) == ["PIN 1234, that is 1 2 3 4. {name} {0} {"]


def test_collect_timeout_goes_to_timeout_goto() -> None:
    r = keys(clock=10.0)
    assert texts(r.dtmf("2", 10.0)) == ["Enter your pin."]
    assert r.dtmf_deadline() == 15.0  # counted from entering the node
    assert r.poll(14.0) is None
    r.dtmf("7", 14.0)
    assert r.dtmf_deadline() == 19.0 and r.poll(18.9) is None
    assert r.poll(19.0) == [Reply("Too slow after 7.", hangup=True)]


def test_collect_timeout_without_goto_repeats_then_says_goodbye() -> None:
    script = IvrScript.from_dict({"max_fallbacks": 1, "goodbye": "Bye now.", "nodes": {
        "pin": {"say": "Enter a code.", "collect": {"digits": 2, "timeout_s": 5, "goto": "ok"}},
        "ok": {"say": "Code {digits}.", "hangup": True}}})
    r = ScriptResponder(script, clock=lambda: 0.0)
    assert texts(r.start()) == ["Enter a code."] and r.dtmf_deadline() == 5.0
    assert texts(r.poll(5.0)) == ["Sorry, I did not catch that. Enter a code."]
    assert r.misses == 1 and r.dtmf_deadline() == 10.0  # a full timeout after the fallback
    assert r.poll(10.0) == [Reply("Bye now.", hangup=True)]
    assert r.dtmf_deadline() is None and r.dtmf("1", 11.0) is None


def test_terminator_with_nothing_typed_is_a_miss() -> None:
    r = keys()
    r.dtmf("2", 0.0)
    assert "did not catch" in first(r.dtmf("#", 1.0)) and r.node == "pin"


def test_fill_prompt_is_a_safe_substitution() -> None:
    assert fill_prompt("{digits}/{digits_spaced}", "{digits_spaced}") == (
        "{digits_spaced}/{ d i g i t s _ s p a c e d }")  # the value is not read as a template
    assert fill_prompt("{0} {digits!r} {name} {{digits}} {", "12") == "{0} {digits!r} {name} {12} {"
    assert fill_prompt("a\\1 {digits}", "\\g<0>") == "a\\1 \\g<0>"


def test_repeat_and_back_keys() -> None:
    r = keys()
    assert texts(r.dtmf("*", 0.0)) == ["Press 1, 11 or 2."] and r.misses == 0
    assert texts(r.dtmf("9", 0.5)) == ["Press 1, 11 or 2."]  # nothing to go back to: say it again
    r.dtmf("2", 1.0)
    r.dtmf("5", 2.0)
    assert texts(r.dtmf("*", 3.0)) == ["Enter your pin."]  # repeat starts the entry over
    assert r.dtmf_deadline() == 8.0
    assert [r.dtmf(k, 4.0) for k in "123"] == [None] * 3
    assert texts(r.dtmf("4", 4.0)) == ["PIN 1234, that is 1 2 3 4. {name} {0} {"]
    r = keys()
    r.dtmf("1", 0.0)
    r.dtmf("1", 0.1)  # -> eleven, which waits for input
    assert texts(r.dtmf("9", 1.0)) == ["Press 1, 11 or 2."] and r.node == "menu"
    r.dtmf("2", 2.0)
    assert texts(r.dtmf("9", 3.0)) == ["Press 1, 11 or 2."] and r.dtmf_deadline() is None


def test_a_key_miss_counts_toward_max_fallbacks() -> None:
    r = keys()
    first = r.dtmf("5", 0.0)
    assert first is not None and "did not catch" in first[0].text and not first[0].hangup
    assert r.dtmf("#", 1.0) == [Reply("Bye now.", hangup=True)]
    assert r.dtmf("1", 2.0) is None and r.poll(100.0) is None


def test_speech_and_spoken_digits_on_a_collect_node() -> None:
    r = keys()
    r.dtmf("2", 0.0)
    assert said(r, "get me an agent") == [Reply("Connecting.", hangup=True)]
    r = keys()
    r.dtmf("2", 0.0)
    assert texts(said(r, "it's one two 3 four")) == ["PIN 1234, that is 1 2 3 4. {name} {0} {"]
    r = keys()
    r.dtmf("2", 0.0)
    assert "did not catch" in said(r, "one two three four five")[0].text  # too many digits
    r = keys()
    assert texts(said(r, "eleven")) == ["Eleven."]
    r = keys()
    assert texts(said(r, "two")) == ["Enter your pin."]  # a spoken key on a "press" menu


def test_speech_drops_a_half_typed_key_sequence() -> None:
    r = keys()
    assert r.dtmf("1", 0.0) is None
    assert texts(said(r, "eleven")) == ["Eleven."] and r.dtmf_deadline() is None


def test_invalid_keys_are_ignored() -> None:
    r = keys()
    assert r.dtmf("x", 0.0) is None and r.dtmf("12", 0.0) is None and r.misses == 0


@pytest.mark.parametrize(("node", "match"), [
    ({"say": "x", "routes": [{"digits": 1, "goto": "a"}]}, r"'n'.*routes\[0\]\.digits"),
    ({"say": "x", "routes": [{"digits": "1x", "goto": "a"}]}, r"'n'.*routes\[0\]\.digits"),
    ({"say": "x", "routes": [{"digits": "1", "goto": "nowhere"}]}, r"'n'.*nowhere.*goto"),
    ({"say": "x", "routes": [{"digits": "1", "goto": "a"}, {"digits": "1", "goto": "a"}]},
     r"'n'.*used twice"),
    ({"say": "x", "collect": {"digits": 4, "goto": "nowhere"}}, r"'n'.*collect\.goto"),
    ({"say": "x", "collect": {"digits": 4, "goto": "a", "timeout_goto": "gone"}},
     r"'n'.*collect\.timeout_goto"),
    ({"say": "x", "collect": {"digits": 0, "goto": "a"}}, r"'n'.*collect\.digits"),
    ({"say": "x", "collect": {"digits": 33, "goto": "a"}}, r"'n'.*collect\.digits"),
    ({"say": "x", "collect": {"digits": "4", "goto": "a"}}, r"'n'.*collect\.digits"),
    ({"say": "x", "collect": {"digits": 4, "goto": "a", "terminator": "##"}},
     r"'n'.*collect\.terminator"),
    ({"say": "x", "collect": {"digits": 4, "goto": "a", "terminator": None}},
     r"'n'.*collect\.terminator"),  # an unquoted `#` in YAML
    ({"say": "x", "collect": {"digits": 4, "goto": "a", "timeout_s": 0.4}},
     r"'n'.*collect\.timeout_s"),
    ({"say": "x", "collect": {"digits": 4, "goto": "a", "timeout_s": 61}},
     r"'n'.*collect\.timeout_s"),
    ({"say": "x", "collect": {"digits": 4, "goto": "a"}, "next": "a"}, r"'n'.*next"),
    ({"say": "x", "collect": {"digits": 4, "goto": "a"}, "routes": [{"digits": "1", "goto": "a"}]},
     r"'n'.*collect"),
])
def test_invalid_key_settings_name_the_node_and_field(node: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        IvrScript.from_dict({"start": "n", "nodes": {"n": node, "a": {"say": "a"}}})


@pytest.mark.parametrize(("extra", "match"), [
    ({"repeat_key": "**"}, "repeat_key"), ({"back_key": None}, "back_key"),
    ({"back_key": "*"}, "back_key"), ({"digit_timeout_s": 0}, "digit_timeout_s"),
])
def test_invalid_script_keys(extra: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        IvrScript.from_dict({**extra, "nodes": {"a": {"say": "a"}}})


def test_example_menu_walk_by_keys() -> None:
    r = ScriptResponder(IvrScript.load(ROOT / "examples" / "ivr_menu.yaml"), clock=lambda: 0.0)
    assert "press 1" in r.start()[0].text.lower()
    assert "account number" in first(r.dtmf("1", 1.0))
    assert r.dtmf_deadline() is not None
    assert [r.dtmf(k, 2.0) for k in "123"] == [None] * 3
    balance = texts(r.dtmf("4", 2.5))  # the count is reached: no need to wait for the pound
    assert balance == ["Account 1 2 3 4. Your balance is one hundred and twenty dollars.",
                       "Can I help with anything else? Press 1 or say yes, press 2 or say no."]
    assert r.node == "anything_else"
    assert r.dtmf("#", 3.0) is None and r.misses == 0  # the pound the prompt asked for
    assert r.dtmf("2", 4.0) == [Reply("Thank you for calling. Goodbye.", hangup=True)]


def test_example_menu_shorter_number_ends_with_pound() -> None:
    r = ScriptResponder(IvrScript.load(ROOT / "examples" / "ivr_menu.yaml"), clock=lambda: 0.0)
    r.start()
    r.dtmf("1", 1.0)
    assert [r.dtmf(k, 2.0) for k in "123"] == [None] * 3
    balance = texts(r.dtmf("#", 3.0))
    assert balance is not None and balance[0].startswith("Account 1 2 3. Your balance")
    assert r.dtmf("1", 4.0) is not None and r.node == "welcome"  # 1 = yes: the menu again


def test_only_the_pound_right_after_a_full_entry_is_swallowed() -> None:
    r = ScriptResponder(IvrScript.load(ROOT / "examples" / "ivr_menu.yaml"), clock=lambda: 0.0)
    r.start()
    r.dtmf("1", 0.0)
    for k in "1234":
        r.dtmf(k, 1.0)
    assert "did not catch" in first(r.dtmf("#", 30.0))  # long after: a miss like any other


def test_example_menu_still_walks_by_speech() -> None:
    r = ScriptResponder(IvrScript.load(ROOT / "examples" / "ivr_menu.yaml"), clock=lambda: 0.0)
    r.start()
    assert said(r, "I want to talk to an agent.")[0].hangup
    r = ScriptResponder(IvrScript.load(ROOT / "examples" / "ivr_menu.yaml"), clock=lambda: 0.0)
    r.start()
    said(r, "cards please")
    assert r.node == "anything_else"
    assert said(r, "yes")[0].text.startswith("Welcome")
    said(r, "balance")
    assert "Account 4 2 4 2." in said(r, "four two four two")[0].text


def test_echo_and_openai_keys() -> None:
    echo = EchoResponder()
    assert echo.dtmf("5", 0.0) == [Reply("You pressed 5.")]
    assert echo.dtmf("*", 0.0) == [Reply("You pressed star.")]
    assert echo.dtmf("#", 0.0) == [Reply("You pressed pound.")]
    assert echo.dtmf_deadline() is None and echo.poll(1e9) is None
    llm = OpenAIResponder("http://127.0.0.1:9", "m")
    assert llm.dtmf("1", 0.0) is None and llm.dtmf_deadline() is None and llm.poll(1e9) is None
