"""JSON from peers, parsed strictly: bounded nesting, no NaN/Infinity, no lone surrogates.

Every JSON body or event a client sends goes through `loads`, so one hostile document (nested
thousands deep, a 5000-digit number, `NaN`) is a clear `JsonInputError`, never a RecursionError
or a ValueError from deep inside the parser.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 32  # objects/arrays inside each other; real requests and events use fewer than 8

# A `\uD800`-`\uDFFF` escape: only these can put a lone surrogate into a parsed string.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class JsonInputError(ValueError):
    """A document we refuse; the message says why, in words a client can act on. `code` is
    `invalid_encoding` (not UTF-8) or `invalid_json` (malformed, too deep, NaN/Infinity)."""

    def __init__(self, message: str, code: str = "invalid_json") -> None:
        super().__init__(message)
        self.code = code


def _reject_constant(name: str) -> Any:
    raise JsonInputError(f"{name} is not a JSON number; send a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400 parses as inf
        raise JsonInputError(f"the number {text[:40]} is out of range; send a finite number")
    return value


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def loads(raw: str | bytes | bytearray, max_depth: int = MAX_DEPTH) -> Any:
    """Parse `raw` (UTF-8 bytes or text); raise JsonInputError for anything not plain, bounded JSON."""
    if isinstance(raw, bytes | bytearray):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise JsonInputError("the body is not valid UTF-8", "invalid_encoding") from None
    else:
        text = raw
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # undecodable bytes of a text frame, kept as surrogates
                raise JsonInputError("the text is not valid UTF-8", "invalid_encoding") from None
    try:
        value = _DECODER.decode(text)
    except JsonInputError:
        raise
    except json.JSONDecodeError as exc:
        raise JsonInputError(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise JsonInputError(f"JSON nested more than {max_depth} levels deep") from None
    except ValueError:  # the only other parse failure: an integer past Python's 4300-digit limit
        raise JsonInputError("malformed JSON: a number with too many digits") from None
    # Cheap gates: a document with few brackets cannot be deep; one without a surrogate escape
    # cannot hold a lone surrogate. Audio events (one object, base64 text) pass both at C speed.
    deep = text.count("[") + text.count("{") > max_depth
    surrogates = "\\u" in text and _SURROGATE_ESCAPE.search(text) is not None
    if deep or surrogates:
        _check(value, max_depth, surrogates)
    return value


def _check(value: Any, max_depth: int, surrogates: bool) -> None:
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
            if surrogates:
                for key in item:
                    _check_str(key)
        elif isinstance(item, list):
            children = item
        else:
            if surrogates and isinstance(item, str):
                _check_str(item)
            continue
        if depth + 1 > max_depth:
            raise JsonInputError(f"JSON nested more than {max_depth} levels deep")
        stack.extend((child, depth + 1) for child in children)


def _check_str(s: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise JsonInputError("a JSON string holds a lone surrogate escape (\\ud800-\\udfff)", "invalid_encoding") from None
