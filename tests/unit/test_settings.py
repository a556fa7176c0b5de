"""server.settings: typed settings from KOMBAIN_* environment variables and overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from kombain.server.settings import Settings


def test_from_env_parses_types() -> None:
    s = Settings.from_env({"KOMBAIN_PORT": "9000", "KOMBAIN_VAD_THRESHOLD": "0.6", "KOMBAIN_API_KEYS": "a, b"})
    assert s.port == 9000 and type(s.port) is int
    assert s.vad_threshold == 0.6 and type(s.vad_threshold) is float
    assert s.api_keys == "a, b"
    assert s.api_key_set == frozenset({"a", "b"})


def test_from_env_empty_gives_defaults() -> None:
    s = Settings.from_env({}, data_dir=Path("/tmp/x"))
    assert (s.host, s.port, s.stt_model, s.vad_silence_ms) == ("127.0.0.1", 8000, "tiny.en", 500)
    assert s.api_key_set == frozenset()


def test_from_env_ignores_unprefixed_and_unknown() -> None:
    s = Settings.from_env({"PORT": "1", "KOMBAIN_NOT_A_SETTING": "x", "kombain_port": "2"})
    assert s.port == 8000


def test_from_env_path_and_str() -> None:
    s = Settings.from_env({"KOMBAIN_DATA_DIR": "~/kombain-data", "KOMBAIN_STT_MODEL": "base", "KOMBAIN_HOST": "0.0.0.0"})
    assert isinstance(s.data_dir, Path)
    assert s.data_dir == Path("~/kombain-data").expanduser()
    assert not str(s.data_dir).startswith("~")
    assert (s.stt_model, s.host) == ("base", "0.0.0.0")


def test_overrides_win_over_env() -> None:
    env = {"KOMBAIN_PORT": "9000", "KOMBAIN_HOST": "0.0.0.0", "KOMBAIN_STT_BEAM_SIZE": "5"}
    s = Settings.from_env(env, port=9100, host="10.0.0.1", stt_beam_size=None)
    assert s.port == 9100
    assert s.host == "10.0.0.1"
    assert s.stt_beam_size == 5  # a None override (flag not given) leaves the env value


def test_string_overrides_are_converted() -> None:
    s = Settings.from_env({}, port="9200", vad_threshold="0.7", max_sessions="4")
    assert (s.port, s.vad_threshold, s.max_sessions) == (9200, 0.7, 4)
    assert type(s.port) is int and type(s.vad_threshold) is float


@pytest.mark.parametrize(
    ("env", "name"),
    [({"KOMBAIN_PORT": "eighty"}, "port"), ({"KOMBAIN_VAD_SILENCE_MS": "0.5"}, "vad_silence_ms"),
     ({"KOMBAIN_VAD_THRESHOLD": "high"}, "vad_threshold")],
)
def test_bad_value_raises_naming_setting(env: dict, name: str) -> None:
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        Settings.from_env(env)


def test_bad_override_raises_naming_setting() -> None:
    with pytest.raises(ValueError, match="max_sessions"):
        Settings.from_env({}, max_sessions="lots")


@pytest.mark.parametrize(
    ("keys", "expected"),
    [("", frozenset()), ("k1", frozenset({"k1"})), (" k1 ,k2,, k1 ", frozenset({"k1", "k2"})), (" , ", frozenset())],
)
def test_api_key_set(keys: str, expected: frozenset) -> None:
    assert Settings(api_keys=keys, data_dir=Path("/tmp/x")).api_key_set == expected


def test_settings_frozen_and_replace() -> None:
    s = Settings(data_dir=Path("/tmp/x"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]
    t = s.replace(port=1234)
    assert t.port == 1234 and s.port == 8000
    assert t.data_dir == s.data_dir
