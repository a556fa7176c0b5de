"""Strict JSON for peer input: bounded depth, finite numbers, real text."""

from __future__ import annotations

import json
import time

import pytest

from kombain.server.strict_json import MAX_DEPTH, JsonInputError, loads


@pytest.mark.parametrize("doc", ["{}", "[]", '{"a": [1, 2.5, -3e2, true, null, "x"]}', '"\\ud83d\\ude00"',
                                 "[" * MAX_DEPTH + "]" * MAX_DEPTH, '{"a": "é 中"}'])
def test_plain_json_parses_as_json_does(doc: str) -> None:
    assert loads(doc) == json.loads(doc)
    assert loads(doc.encode()) == json.loads(doc)


@pytest.mark.parametrize(("doc", "words"), [
    ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "nested"),
    ("[" * 100_000, "nested"),
    ('{"a":' * 50 + "1" + "}" * 50, "nested"),
    ("[NaN]", "NaN"), ('{"x": -Infinity}', "Infinity"), ("[1e400]", "1e400"),
    ("[" + "9" * 5000 + "]", "digits"),
    ("{nope", "malformed"),
])
def test_hostile_documents_are_refused_with_a_reason(doc: str, words: str) -> None:
    with pytest.raises(JsonInputError) as ei:
        loads(doc)
    assert words in str(ei.value) and ei.value.code == "invalid_json"


@pytest.mark.parametrize("doc", [b'"\xff"', '"\udcff"', '["\\ud800"]', '{"\\uDC00": 1}', '"\\ude00\\ud83d"'])
def test_text_that_is_not_utf8_is_refused(doc: str | bytes) -> None:
    with pytest.raises(JsonInputError) as ei:
        loads(doc)
    assert ei.value.code == "invalid_encoding"


def test_depth_check_is_cheap_for_audio_events() -> None:
    event = json.dumps({"type": "input_audio_buffer.append", "audio": "QUFB" * 1_000_000})  # 4 MB of base64
    t0 = time.perf_counter()
    for _ in range(5):
        loads(event)
    assert (time.perf_counter() - t0) / 5 < 0.1  # a bound, not a benchmark: no per-character Python loop
