"""Kinds of speech for `python -m kombain.loadtest turn_calibration`: which recorded clips make
which group (by file name), and a group heard through G.711 (`spontaneous_mulaw`, `phone_alaw`)."""

from __future__ import annotations

import argparse
import fnmatch
from pathlib import Path

CODECS = ("mulaw", "alaw")
# Which recorded clips make which group (kind of speech), by file name: the first match wins.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("spontaneous", ("platchat_*",)),
    ("read_heldout", ("librivox_*", "librispeech_*", "jfk_*", "asterisk_*")),
    ("read", ("*",)),
)
HELDOUT_KINDS = tuple(f"{g}{c}" for g in ("spontaneous", "read_heldout") for c in ("", "_mulaw", "_alaw"))

def group_of(file_name: str) -> str:
    """The group (kind of speech) a recorded clip belongs to, by its file name."""
    return next(g for g, patterns in GROUPS if any(fnmatch.fnmatchcase(file_name, p) for p in patterns))


def parse_kind(kind: str) -> tuple[str, str | None]:
    """(group, G.711 codec or None) of a kind: `spontaneous_mulaw` -> ("spontaneous", "mulaw");
    `phone_alaw` -> ("read", "alaw"); `synthetic` -> ("synthetic", None)."""
    if kind.startswith("phone_") and kind.removeprefix("phone_") in CODECS:
        return "read", kind.removeprefix("phone_")
    for codec in CODECS:
        if kind.endswith("_" + codec):
            return kind.removesuffix("_" + codec), codec
    return kind, None


def _kind(kind: str) -> str:
    if parse_kind(kind)[0] not in {g for g, _ in GROUPS} | {"synthetic"}:
        raise argparse.ArgumentTypeError(f"unknown kind {kind!r}: a group of {[g for g, _ in GROUPS]} or "
                                         "synthetic, optionally + _mulaw or _alaw (phone_mulaw/phone_alaw: read's)")
    return kind


def group_rows(rows: list[tuple[str, str]], group: str) -> list[tuple[str, str]]:
    """The (file, text) rows of a transcripts.tsv that belong to `group`."""
    return [(name, text) for name, text in rows if group_of(name) == group]


def group_dir(audio_dirs: list[Path], group: str, dest: Path) -> Path:
    """A clip folder (links and a transcripts.tsv) of the clips of `audio_dirs` in `group`."""
    dest.mkdir(parents=True, exist_ok=True)
    lines = ["file\ttext"]
    for d in audio_dirs:
        rows = [r.split("\t", 1) for r in (d / "transcripts.tsv").read_text().strip().splitlines()[1:]]
        for name, text in group_rows([(r[0], r[1]) for r in rows if len(r) == 2], group):
            if (dest / name).exists():
                raise SystemExit(f"turn_calibration: {name} is in more than one --audio folder")
            (dest / name).symlink_to((d / name).resolve())
            lines.append(f"{name}\t{text}")
    (dest / "transcripts.tsv").write_text("\n".join(lines) + "\n")
    return dest
