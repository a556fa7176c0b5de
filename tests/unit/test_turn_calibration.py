"""The turn calibration's kinds of speech (groups of clips by file name, G.711 versions) and the
merging of saved score files: pure logic, no models."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from kombain.loadtest.turn_calibration import (
    HELDOUT_KINDS,
    KINDS,
    Scored,
    _kind,
    evaluate,
    group_dir,
    group_of,
    merge_scores,
    parse_kind,
    separation,
)


def test_clips_are_grouped_by_file_name() -> None:
    assert group_of("platchat_multilingual_ipa_us_3.wav") == "spontaneous"
    for name in ("librivox_sense_and_sensibility_0870.wav", "librispeech_61-70968-0000.wav",
                 "jfk_inaugural.wav", "asterisk_tt-allbusy.wav"):
        assert group_of(name) == "read_heldout"
    # tests/data/speech's clips match no other group: they stay `read`.
    assert group_of("arctic_a0009.wav") == "read"
    assert group_of("goforward.wav") == "read"


def test_kinds_name_a_group_and_a_codec() -> None:
    assert parse_kind("read") == ("read", None)
    assert parse_kind("phone_mulaw") == ("read", "mulaw")  # the names of the first calibration
    assert parse_kind("phone_alaw") == ("read", "alaw")
    assert parse_kind("spontaneous_mulaw") == ("spontaneous", "mulaw")
    assert parse_kind("read_heldout_alaw") == ("read_heldout", "alaw")
    assert parse_kind("synthetic") == ("synthetic", None)
    for kind in (*KINDS, *HELDOUT_KINDS):
        assert _kind(kind) == kind
    with pytest.raises(argparse.ArgumentTypeError, match="unknown kind"):
        _kind("phone_opus")
    with pytest.raises(argparse.ArgumentTypeError, match="unknown kind"):
        _kind("spontanous")


def test_group_dir_links_the_groups_clips_with_their_transcripts(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "transcripts.tsv").write_text("file\ttext\nplatchat_a.wav\tuh with only\njfk_b.wav\task not\n"
                                         "platchat_c.wav\tand run you through\n")
    for name in ("platchat_a.wav", "jfk_b.wav", "platchat_c.wav"):
        (src / name).write_bytes(name.encode())
    out = group_dir([src], "spontaneous", tmp_path / "out")
    assert (out / "transcripts.tsv").read_text() == (
        "file\ttext\nplatchat_a.wav\tuh with only\nplatchat_c.wav\tand run you through\n")
    assert (out / "platchat_c.wav").read_bytes() == b"platchat_c.wav"
    assert not (out / "jfk_b.wav").exists()
    # A clip in two folders is refused, not silently scored twice.
    with pytest.raises(SystemExit, match="more than one"):
        group_dir([src, src], "read_heldout", tmp_path / "twice")


def _report(kinds: dict[str, list[Scored]], p50: float, decode: float | None = None) -> dict:
    inference = {"p50": p50, "p95": 2 * p50, **({"decode_p50": decode} if decode is not None else {})}
    return {"model_inference_ms": inference,
            "kinds": {kind: {"scores": [r.__dict__ for r in rows]} for kind, rows in kinds.items()}}


def test_score_files_merge_by_kind_with_mean_inference() -> None:
    end = Scored("a", "end", "call my sister", [0.99] * 8, [0.99] * 8)
    mid = Scored("a", "mid", "call my", [0.9] * 8, [0.1] * 8)
    first = _report({"read": [end], "spontaneous": [end]}, 100.0, decode=300.0)
    second = _report({"spontaneous": [end, mid]}, 200.0)
    scored, inference = merge_scores([first, second], None)
    assert {k: len(v) for k, v in scored.items()} == {"read": 1, "spontaneous": 2}  # the later file wins
    assert inference == {"p50": 150.0, "p95": 300.0}  # decode_p50 only where every file has it
    scored, _ = merge_scores([first, second], ["read"])
    assert list(scored) == ["read"]
    with pytest.raises(SystemExit, match="spontaneous_mulaw"):
        merge_scores([first], ["spontaneous_mulaw"])


def test_schedule_ends_a_complete_turn_at_the_words_and_holds_an_unfinished_pause() -> None:
    end = Scored("a", "end", "call my sister", [0.95] * 8, [0.95] * 8)
    mid = Scored("a", "mid", "call my", [0.95] * 8, [0.1] * 8)
    r = evaluate([end, mid], alone=0.99, with_words=0.3, step_ms=320, cap_ms=2000, infer_ms=100, words_ms=400)
    # First check at 160 ms comes back at 260 (0.95 < 0.99 alone); the words at 400 refine it to "complete".
    assert r["end_p50_ms"] == 400.0
    assert r["cut_in"] == 0.0  # the cue keeps "call my" open until the 2 s cap


def test_separation_is_the_chance_an_end_outscores_a_pause() -> None:
    def row(where: str, p: float, cued: float) -> Scored:
        return Scored("a", where, "", [p] * 8, [cued] * 8)

    ends = [row("end", 0.9, 0.9), row("end", 0.4, 0.4)]
    mids = [row("mid", 0.5, 0.1), row("mid", 0.4, 0.1)]
    # raw: 0.9 beats both, 0.4 ties one and loses one -> (2 + 0.5) / 4
    assert separation(ends, mids, 0, cued=False) == 0.625
    assert separation(ends, mids, 3) == 1.0  # the transcript cue puts every pause below every end
    assert separation(ends, [], 0) == 0.5
