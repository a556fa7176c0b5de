"""The conversation's items as pure logic: order, insertion, deletion, truncation, bounds."""

from __future__ import annotations

import pytest

from kombain.streaming.items import Item, ItemError, Items, Part, message


def spoken(item_id: str) -> Item:
    part = Part("output_audio", transcript="one two three four", audio_ms=2000,
                clauses=[("one two", 0, 1000), ("three four", 1000, 2000)])
    return Item(item_id, "message", "assistant", [part])


def test_insert_after_root_and_at_the_end() -> None:
    items = Items()
    assert items.add(message("user", "b", "b")) is None
    assert items.add(message("user", "a", "a"), "root") is None
    assert items.add(message("user", "c", "c")) == "b"
    assert items.add(message("user", "a2", "a2"), "a") == "a"
    assert [i.id for i in items] == ["a", "a2", "b", "c"]
    with pytest.raises(ItemError) as err:
        items.add(message("user", "x"), "missing")
    assert err.value.code == "item_not_found"
    with pytest.raises(ItemError):
        items.add(message("user", "dup", "a"))


def test_delete_and_lookup() -> None:
    items = Items()
    items.add(message("user", "hi", "u1"))
    assert items.delete("u1").id == "u1" and len(items) == 0
    with pytest.raises(ItemError) as err:
        items.get("u1")
    assert err.value.code == "item_not_found"


def test_truncate_cuts_the_transcript_at_what_was_heard_and_may_move() -> None:
    items = Items()
    items.add(spoken("r1"))
    assert items.truncate("r1", 0, 1500).content[0].transcript == "one two three"
    assert items.truncate("r1", 0, 500).content[0].transcript == "one"
    assert items.truncate("r1", 0, 2000).content[0].transcript == "one two three four"
    for args, param in (((0, 2001), "audio_end_ms"), ((1, 10), "content_index")):
        with pytest.raises(ItemError) as err:
            items.truncate("r1", *args)
        assert err.value.param == param
    items.add(message("user", "hi", "u1"))
    with pytest.raises(ItemError):
        items.truncate("u1", 0, 0)


def test_the_oldest_items_go_past_the_bound() -> None:
    items = Items(max_items=3)
    for i in range(5):
        items.add(message("user", str(i), f"i{i}"))
    assert [i.id for i in items] == ["i2", "i3", "i4"]
    assert items.last_user_text() == "4"
