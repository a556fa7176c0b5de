"""streaming.stt_engine: which engine a KOMBAIN_STT_MODEL value picks, and the errors that name
the setting (an unknown name, a directory that holds no model, a model that does not load)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kombain.streaming.moonshine import MoonshineTokenizer, max_tokens
from kombain.streaming.moonshine_runtime import pieces
from kombain.streaming.stt_engine import (
    EngineLoadError,
    engine_of,
    load_engine,
    requested_model_error,
)


def test_bundled_names_pick_their_engine() -> None:
    assert engine_of("tiny.en") == "whisper"
    assert engine_of("base") == "whisper"
    assert engine_of("moonshine-base") == "moonshine"


def test_a_directory_picks_its_engine_by_the_files_in_it(tmp_path: Path) -> None:
    ct2 = tmp_path / "ct2"
    ct2.mkdir()
    (ct2 / "model.bin").write_bytes(b"x")
    assert engine_of(str(ct2)) == "whisper"
    moon = tmp_path / "moon"
    moon.mkdir()
    for f in ("encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin"):
        (moon / f).write_bytes(b"x")
    assert engine_of(str(moon)) == "moonshine"


def test_unknown_name_and_empty_directory_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(EngineLoadError, match="KOMBAIN_STT_MODEL='whisper-large'.*unknown speech model"):
        engine_of("whisper-large")
    with pytest.raises(EngineLoadError, match="KOMBAIN_STT_MODEL=.*neither a CTranslate2 Whisper model"):
        engine_of(str(tmp_path))


def test_a_model_directory_that_does_not_load_names_the_setting(tmp_path: Path) -> None:
    moon = tmp_path / "moon"
    moon.mkdir()
    for f in ("encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin"):
        (moon / f).write_bytes(b"not a model")
    with pytest.raises(EngineLoadError, match=r"KOMBAIN_STT_MODEL=.*the moonshine model did not load"):
        load_engine(str(moon), data_dir=tmp_path / "data")
    ct2 = tmp_path / "ct2"
    ct2.mkdir()
    (ct2 / "model.bin").write_bytes(b"not a model")
    with pytest.raises(EngineLoadError, match=r"KOMBAIN_STT_MODEL=.*the whisper model did not load"):
        load_engine(str(ct2), data_dir=tmp_path / "data", device="cpu")


def test_a_session_naming_another_engines_model_is_refused() -> None:
    assert requested_model_error("moonshine-base", "tiny.en") is not None
    assert "serves 'moonshine-base'" in (requested_model_error("base", "moonshine-base") or "")
    # The served model itself, aliases and any other name mean the served model.
    for name in ("tiny.en", "whisper-1", "gpt-4o-transcribe", None):
        assert requested_model_error(name, "tiny.en") is None


def test_moonshine_tokenizer_reads_length_prefixed_pieces() -> None:
    def piece(b: bytes) -> bytes:
        return bytes([len(b)]) + b

    data = piece(b"<unk>") + piece(b"<s>") + piece(b"</s>") + b"".join(piece(bytes([i])) for i in range(256))
    data += piece("\u2581ten".encode()) + piece("\u2581of".encode()) + piece(b"s")
    long = b"y" * 200  # a length past 127 takes two bytes
    data += bytes([0x80 | (200 & 0x7F), 200 >> 7]) + long
    tok = MoonshineTokenizer(data)
    assert tok.decode([1, 259, 260, 261, 2]) == "ten ofs"
    assert tok.decode([3 + ord("A"), 3 + 0xC3, 3 + 0xA9]) == "Aé"  # byte fallback, UTF-8 joined
    assert tok.token_bytes(262) == long and tok.token_bytes(40000) == b""
    with pytest.raises(ValueError, match="truncated"):
        MoonshineTokenizer(data[:-5])


def test_decode_bound_follows_the_audio_length() -> None:
    assert max_tokens(16000) == 11  # 6.5 tokens a second, rounded up, and 4 more
    assert max_tokens(10 * 16000) == 69


def test_long_audio_is_cut_at_a_quiet_point_within_the_piece_limit() -> None:
    rate = 16000
    audio = np.full(50 * rate, 0.1, dtype=np.float32)
    audio[int(17.3 * rate) : int(17.5 * rate)] = 0.0  # a pause inside the first piece's search window
    cut = pieces(audio, piece_s=20.0)
    assert [len(p) for _, p in cut][0] == pytest.approx(17.3 * rate, abs=rate // 20)
    assert all(len(p) <= 20 * rate for _, p in cut)
    assert sum(len(p) for _, p in cut) == len(audio)
    assert [s for s, _ in cut][1] == len(cut[0][1])


def test_a_capped_decode_loses_its_repeated_tail_and_normal_speech_keeps_repeats() -> None:
    from kombain.streaming.moonshine_runtime import cut_capped_loop

    looped = "Four queen of cloves four queen of cloves four queen of cloves four queen"
    assert cut_capped_loop(looped) == "Four queen of cloves"
    assert cut_capped_loop("five five five") == "five five five"  # single words: speech repeats them
    assert cut_capped_loop("go forward ten meters") == "go forward ten meters"


def test_an_engine_describes_itself_by_its_kind() -> None:
    from kombain.streaming.moonshine_runtime import MoonshineRuntime
    from kombain.streaming.stt_engine import describe
    from kombain.streaming.whisper_runtime import WhisperRuntime

    moon = object.__new__(MoonshineRuntime)
    moon.name = "moonshine-base"
    whisper = object.__new__(WhisperRuntime)
    whisper.name = "tiny.en"
    assert describe(moon).startswith("Moonshine moonshine-base")
    assert describe(whisper).startswith("Whisper tiny.en")
