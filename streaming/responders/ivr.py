"""The scripted IVR responder: a YAML menu of prompts, keyword and key routes, digit collection."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kombain.streaming.responders.base import Reply, Responder, ResponseRequest

DTMF_KEYS = frozenset("0123456789*#ABCD")
KEY_WORDS = {"*": "star", "#": "pound"}
MAX_COLLECT_DIGITS = 32
_BACK_HISTORY = 16  # enough for any menu depth; bounds memory on a long call
_PLACEHOLDER = re.compile(r"\{(digits|digits_spaced)\}")
_DIGIT_WORDS = {"zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9"}
# Words a caller may wrap spoken digits in ("my number is one two three four").
_DIGIT_FILLERS = frozenset({"my", "number", "is", "it's", "its", "account", "press", "pressed",
                            "um", "uh", "and", "the", "okay", "ok"})


def key_of(digit: str) -> str | None:
    """The DTMF key `digit` names ("a" counts as "A"), or None when it is not one."""
    key = str(digit).strip().upper()
    return key if len(key) == 1 and key in DTMF_KEYS else None


def fill_prompt(text: str, digits: str) -> str:
    """Put the collected value into `{digits}` / `{digits_spaced}`; every other brace stays."""
    values = {"digits": digits, "digits_spaced": " ".join(digits)}
    # One regex pass, not str.format: the value is never re-read as a template.
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def spoken_digits(transcript: str) -> str:
    """Digits the caller said ("one two three", "1 2 3"), or "" if they said anything else."""
    out: list[str] = []
    for word in re.findall(r"[a-z0-9']+", transcript.lower()):
        if word.isdigit():
            out.append(word)
        elif word in _DIGIT_WORDS:
            out.append(_DIGIT_WORDS[word])
        elif word not in _DIGIT_FILLERS:
            return ""
    return "".join(out)


@dataclass(frozen=True, slots=True)
class _Route:
    keywords: tuple[str, ...]
    goto: str
    digits: str = ""  # keys that take this route too ("" = speech only)


@dataclass(frozen=True, slots=True)
class _Collect:
    digits: int  # at most this many keys
    goto: str
    terminator: str = "#"  # "" = none
    timeout_s: float = 5.0
    timeout_goto: str | None = None  # None: repeat the prompt, counting as a miss


@dataclass(frozen=True, slots=True)
class _Node:
    say: str
    routes: tuple[_Route, ...] = ()
    fallback: str | None = None
    hangup: bool = False
    next: str | None = None  # go on to this node right after speaking (no input needed)
    collect: _Collect | None = None


_ABSENT: Any = object()  # a key missing from the YAML, unlike one given as null


def _parsekey_of(value: Any, where: str, default: str) -> str:
    """One DTMF key, or "" for none; a YAML null is refused (an unquoted `#` reads as null)."""
    if value is _ABSENT:
        return default
    if value is None:
        raise ValueError(f"{where} is empty: quote the key (\"#\", \"*\") or use \"\" for none")
    if not isinstance(value, str) or (value and key_of(value) != value.upper()):
        raise ValueError(f"{where} must be one key of 0-9 * # A-D in quotes, not {value!r}")
    return value.upper()


def _parse_seconds(value: Any, where: str, default: float) -> float:
    if value is _ABSENT:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.5 <= value <= 60:
        raise ValueError(f"{where} must be a number of seconds from 0.5 to 60, not {value!r}")
    return float(value)


def _parse_route(raw: Any, where: str) -> _Route:
    if not isinstance(raw, dict) or not isinstance(raw.get("goto"), str):
        raise ValueError(f"{where} needs a 'goto' node name")
    keywords = raw.get("keywords", []) or []
    if not isinstance(keywords, list):
        raise ValueError(f"{where}.keywords must be a list")
    digits = raw.get("digits", "")
    # YAML reads `digits: 1` as a number and `digits: 01` as 1, so only quoted strings are taken.
    if not isinstance(digits, str) or any(key_of(k) is None for k in digits) or len(digits) > 8:
        raise ValueError(f"{where}.digits must be a quoted string of up to 8 keys (0-9 * # A-D), "
                         f"not {digits!r}")
    if not keywords and not digits:
        raise ValueError(f"{where} needs 'keywords' or 'digits'")
    return _Route(tuple(str(k).lower() for k in keywords), raw["goto"], digits.upper())


def _parse_collect(raw: Any, where: str) -> _Collect:
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a mapping (digits, terminator, timeout_s, goto, ...)")
    unknown = set(raw) - {"digits", "terminator", "timeout_s", "goto", "timeout_goto"}
    if unknown:
        raise ValueError(f"{where} has unknown keys {sorted(unknown)}")
    count = raw.get("digits")
    if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= MAX_COLLECT_DIGITS:
        raise ValueError(f"{where}.digits must be a whole number from 1 to {MAX_COLLECT_DIGITS}, "
                         f"not {count!r}")
    if not isinstance(raw.get("goto"), str):
        raise ValueError(f"{where}.goto needs a node name")
    timeout_goto = raw.get("timeout_goto")
    if timeout_goto is not None and not isinstance(timeout_goto, str):
        raise ValueError(f"{where}.timeout_goto must be a node name or null")
    return _Collect(count, raw["goto"],
                    _parsekey_of(raw.get("terminator", _ABSENT), f"{where}.terminator", "#"),
                    _parse_seconds(raw.get("timeout_s", _ABSENT), f"{where}.timeout_s", 5.0),
                    timeout_goto)


@dataclass
class IvrScript:
    """A menu loaded from YAML: nodes with prompts, keyword and key routes, digit collection."""

    start: str
    nodes: dict[str, _Node]
    max_fallbacks: int = 2
    goodbye: str = "Goodbye."
    repeat_key: str = "*"  # says the current node again ("" = off)
    back_key: str = ""  # returns to the previous node that waited for input ("" = off)
    digit_timeout_s: float = 3.0  # wait for the next key of a longer route ("1" vs "11")

    @classmethod
    def load(cls, path: str | Path) -> IvrScript:
        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read IVR script {path}: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> IvrScript:
        if not isinstance(data, dict) or not isinstance(data.get("nodes"), dict):
            raise ValueError("an IVR script needs a 'nodes' mapping")
        nodes: dict[str, _Node] = {}
        for name, raw in data["nodes"].items():
            if not isinstance(raw, dict) or not isinstance(raw.get("say", ""), str):
                raise ValueError(f"node {name!r}: needs a 'say' string")
            routes_raw = raw.get("routes", []) or []
            if not isinstance(routes_raw, list):
                raise ValueError(f"node {name!r}: routes must be a list")
            routes = tuple(_parse_route(r, f"node {name!r}: routes[{i}]")
                           for i, r in enumerate(routes_raw))
            collect = None
            if raw.get("collect") is not None:
                collect = _parse_collect(raw["collect"], f"node {name!r}: collect")
            nodes[str(name)] = _Node(raw.get("say", ""), routes, raw.get("fallback"),
                                     bool(raw.get("hangup", False)), raw.get("next"), collect)
        start = str(data.get("start", next(iter(nodes), "")))
        for name, node in nodes.items():
            cls._check_node(name, node, nodes)
        if start not in nodes:
            raise ValueError(f"start node {start!r} is not defined")
        repeat_key = _parsekey_of(data.get("repeat_key", _ABSENT), "repeat_key", "*")
        back_key = _parsekey_of(data.get("back_key", _ABSENT), "back_key", "")
        if repeat_key and repeat_key == back_key:
            raise ValueError(f"repeat_key and back_key are both {repeat_key!r}")
        return cls(start, nodes, int(data.get("max_fallbacks", 2)),
                   str(data.get("goodbye", "Goodbye.")), repeat_key, back_key,
                   _parse_seconds(data.get("digit_timeout_s", _ABSENT), "digit_timeout_s", 3.0))

    @staticmethod
    def _check_node(name: str, node: _Node, nodes: dict[str, _Node]) -> None:
        """Every goto names a node; a collect node neither chains on nor takes key routes."""
        targets = [(f"routes[{i}].goto", r.goto) for i, r in enumerate(node.routes)]
        targets += [("next", node.next)] if node.next else []
        if node.collect is not None:
            targets.append(("collect.goto", node.collect.goto))
            if node.collect.timeout_goto is not None:
                targets.append(("collect.timeout_goto", node.collect.timeout_goto))
        for what, target in targets:
            if target not in nodes:
                raise ValueError(f"node {name!r} routes to unknown node {target!r} ({what})")
        seen: set[str] = set()
        for i, route in enumerate(node.routes):
            if route.digits in seen:
                raise ValueError(
                    f"node {name!r}: routes[{i}].digits {route.digits!r} is used twice")
            if route.digits:
                seen.add(route.digits)
        if node.collect is not None:
            if node.next or node.hangup:
                raise ValueError(f"node {name!r}: collect waits for keys, so it cannot have "
                                 "'next' or 'hangup'")
            if seen:
                # The keys are the value being collected; a route on them could never be taken.
                raise ValueError(f"node {name!r}: routes[].digits cannot be used with collect")


@dataclass
class ScriptResponder(Responder):
    """Walks an IvrScript: speech is matched against the current node's keywords, keys against
    its digit routes or its collection."""

    script: IvrScript
    node: str = ""
    misses: int = 0
    digits: str = ""  # the last collected value, for {digits} in prompts
    # Entering a collect node from start() or speech has no `now`; its timeout starts from this.
    clock: Callable[[], float] = time.monotonic
    _said: list[str] = field(default_factory=list)
    _keys: str = ""  # keys pressed on the current node so far
    _deadline: float | None = None
    _waiting: str | None = None  # the node now waiting for input (None before start)
    _back: list[str] = field(default_factory=list)  # earlier waiting nodes, for back_key
    _ended: bool = False  # a hang-up was said: keys are ignored from then on
    _swallow: tuple[str, float] | None = None  # (terminator, until): see _collect_key

    def __post_init__(self) -> None:
        self.node = self.script.start

    def start(self) -> Sequence[Reply]:
        return self._enter(self.script.start, self.clock())

    def _enter(self, name: str, now: float, remember: bool = True) -> list[Reply]:
        replies: list[Reply] = []
        seen: set[str] = set()
        while name and name not in seen:
            seen.add(name)
            self.node, self.misses = name, 0
            node = self.script.nodes[name]
            replies.append(Reply(fill_prompt(node.say, self.digits), hangup=node.hangup))
            if node.hangup:
                break
            name = node.next or ""
        node = self.script.nodes[self.node]
        self._keys, self._deadline = "", None
        if node.hangup:
            self._ended = True
            return replies
        if remember and self._waiting is not None and self._waiting != self.node:
            self._back = [*self._back, self._waiting][-_BACK_HISTORY:]
        self._waiting = self.node
        if node.collect is not None:
            self._deadline = now + node.collect.timeout_s
        return replies

    def _miss(self, now: float) -> list[Reply]:
        """Input that matched nothing: the node's fallback, or goodbye after too many."""
        self._keys = ""
        self.misses += 1
        if self.misses > self.script.max_fallbacks:
            self._ended, self._deadline = True, None
            return [Reply(self.script.goodbye, hangup=True)]
        node = self.script.nodes[self.node]
        # The caller gets the full timeout again after hearing the fallback.
        self._deadline = now + node.collect.timeout_s if node.collect is not None else None
        text = node.fallback or f"Sorry, I did not catch that. {node.say}"
        return [Reply(fill_prompt(text, self.digits))]

    def _repeat(self, now: float) -> list[Reply]:
        node = self.script.nodes[self.node]
        self._keys = ""  # on a collect node the repeat key also starts the entry over
        self._deadline = now + node.collect.timeout_s if node.collect is not None else None
        return [Reply(fill_prompt(node.say, self.digits))]

    def _go_back(self, now: float) -> list[Reply]:
        if not self._back:
            return self._repeat(now)  # nowhere to go back to: the menu again is the kindest answer
        return self._enter(self._back.pop(), now, remember=False)

    def _finish(self, collect: _Collect, now: float) -> list[Reply]:
        self.digits = self._keys
        return self._enter(collect.goto, now)

    async def respond(self, request: ResponseRequest) -> AsyncIterator[Reply]:
        for i, r in enumerate(self._hear(request.transcript)):
            yield Reply(("" if i == 0 else " ") + r.text, r.hangup)

    def _hear(self, transcript: str) -> list[Reply]:
        now = self.clock()
        self._swallow = None
        words = set(re.findall(r"[a-z0-9']+", transcript.lower()))
        text = " " + " ".join(re.findall(r"[a-z0-9']+", transcript.lower())) + " "
        node = self.script.nodes[self.node]
        for route in node.routes:
            if any((k in words) if " " not in k else (f" {k} " in text) for k in route.keywords):
                return self._enter(route.goto, now)
        said = spoken_digits(transcript)
        if node.collect is not None:
            # Spoken digits complete the entry, as if the terminator followed them.
            if said and len(self._keys) + len(said) <= node.collect.digits:
                self._keys += said
                return self._finish(node.collect, now)
        else:
            # "one" on a "press 1" menu; speech also drops any half-typed key sequence.
            match = next((r for r in node.routes if said and r.digits == said), None)
            if match is not None:
                return self._enter(match.goto, now)
        return self._miss(now)

    def dtmf(self, digit: str, now: float) -> Sequence[Reply] | None:
        key = key_of(digit)
        if key is None or self._ended:
            return None
        swallow, self._swallow = self._swallow, None
        if swallow is not None and key == swallow[0] and now <= swallow[1]:
            return None
        node = self.script.nodes[self.node]
        if node.collect is not None:
            return self._collectkey_of(node.collect, key, now)
        keys = self._keys + key
        routes = [r for r in node.routes if r.digits.startswith(keys)]
        if not routes and not self._keys:
            # Routes come first, so a menu may still use "*" or the back key for an option.
            if key == self.script.repeat_key:
                return self._repeat(now)
            if key == self.script.back_key:
                return self._go_back(now)
        if not routes:
            return self._miss(now)
        if len(routes) == 1 and routes[0].digits == keys:
            return self._enter(routes[0].goto, now)
        # A longer route ("11") may follow: wait for its next key, or take "1" at the deadline.
        self._keys, self._deadline = keys, now + self.script.digit_timeout_s
        return None

    def _collectkey_of(self, collect: _Collect, key: str, now: float) -> list[Reply] | None:
        if collect.terminator and key == collect.terminator:
            return self._finish(collect, now) if self._keys else self._miss(now)
        if key == self.script.repeat_key:
            return self._repeat(now)
        if key == self.script.back_key:
            return self._go_back(now)
        self._keys += key
        if len(self._keys) >= collect.digits:
            replies = self._finish(collect, now)
            # "Enter four digits, then press pound": the pound after a full entry belongs to it,
            # not to the next menu, where it would count as a miss.
            if collect.terminator and not self._ended:
                self._swallow = (collect.terminator, now + collect.timeout_s)
            return replies
        self._deadline = now + collect.timeout_s
        return None

    def dtmf_deadline(self) -> float | None:
        return self._deadline

    def prompt_finished(self, now: float) -> None:
        """The caller has heard the prompt: a collection's timeout counts from here, not from
        when the prompt was generated (a long prompt would otherwise eat the caller's time)."""
        node = self.script.nodes[self.node]
        if node.collect is not None and self._deadline is not None and not self._keys:
            self._deadline = max(self._deadline, now + node.collect.timeout_s)

    def poll(self, now: float) -> Sequence[Reply] | None:
        if self._deadline is None or now < self._deadline:
            return None
        self._deadline = None
        node = self.script.nodes[self.node]
        if node.collect is not None:
            if node.collect.timeout_goto is None:
                return self._miss(now)
            self.digits = self._keys  # what was typed so far, for the timeout node's prompt
            return self._enter(node.collect.timeout_goto, now)
        route = next((r for r in node.routes if self._keys and r.digits == self._keys), None)
        return self._enter(route.goto, now) if route is not None else self._miss(now)
