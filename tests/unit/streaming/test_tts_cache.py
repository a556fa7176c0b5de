"""SpeechCache: the key (what makes audio differ), which texts are kept, the byte bound."""

from __future__ import annotations

from kombain.streaming.tts_cache import CacheConfig, SpeechCache, cache_key, clean_text


def test_the_key_is_everything_that_changes_the_audio() -> None:
    base = cache_key("joe:1:abc", "One moment, please.", length_scale=1.0, rate=8000)
    assert base == cache_key("joe:1:abc", "  One   moment, please. ", length_scale=1.0, rate=8000)
    others = {
        cache_key("joe:2:abc", "One moment, please.", length_scale=1.0, rate=8000),  # other model file
        cache_key("joe:1:abc", "One moment please.", length_scale=1.0, rate=8000),  # punctuation
        cache_key("joe:1:abc", "one moment, please.", length_scale=1.0, rate=8000),  # case
        cache_key("joe:1:abc", "One moment, please.", length_scale=0.8, rate=8000),  # speaking rate
        cache_key("joe:1:abc", "One moment, please.", length_scale=1.0, rate=24000),  # format
        cache_key("joe:1:abc", "One moment, please.", length_scale=1.0, rate=8000, speaker=3),
    }
    assert base not in others and len(others) == 6
    assert base.startswith("kombain:tts:v1:") and clean_text(" a \n b ") == "a b"


def test_bounded_in_bytes_least_recently_used_out() -> None:
    sizes: list[int] = []
    cache = SpeechCache(CacheConfig(max_bytes=1000, max_entry_fraction=0.5), on_size=sizes.append)
    cache.put("a", b"x" * 400)
    cache.put("b", b"x" * 400)
    assert cache.get("a")  # a is now the most recent
    cache.put("c", b"x" * 400)  # over 1000: b goes
    assert cache.get("b") is None and cache.get("a") and cache.get("c")
    assert cache.size_bytes == 800 and sizes[-1] == 800
    cache.put("huge", b"x" * 600)  # more than half the cache in one entry: not kept
    assert cache.get("huge") is None and len(cache) == 2
    cache.put("a", b"y" * 100)  # replacing an entry counts its new size
    assert cache.size_bytes == 500


def test_which_texts_are_worth_keeping() -> None:
    cache = SpeechCache(CacheConfig(max_chars=24))
    assert cache.wanted("Hello.") and cache.wanted("  Hello,   there, friend. ")
    assert not cache.wanted("   ") and not cache.wanted("This text is longer than twenty-four.")
    assert not SpeechCache(CacheConfig(max_bytes=0)).wanted("Hello.")  # no memory tier and no store
