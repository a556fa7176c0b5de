"""Long read sentences (6-10 s) from the recorded clips, for the word-lag benchmark on long turns.

`python -m kombain.loadtest.long_sentences OUT_DIR` writes OUT_DIR/long_NN.wav and a
transcripts.tsv, so that `python -m kombain.loadtest stt --audio OUT_DIR` streams them as turns
(its reference word times come from an offline decode of each file, as for the clips). Each
sentence is 2-3 clips of tests/data/speech, their leading and trailing silence cut to 80 ms and
joined with 120 ms of silence: pauses between phrases (the speculative decode's 160 ms pause
fires, the 500 ms end of turn does not), one turn of 6-10 s.
"""

from __future__ import annotations

import sys
import wave
from pathlib import Path

import numpy as np

from kombain.clients.realtime_client import read_wav

RATE = 16000
SPEECH = Path(__file__).resolve().parent.parent / "tests" / "data" / "speech"
SENTENCES = (
    ("arctic_a0007", "arctic_a0009", "cards_005"),
    ("arctic_a0009", "goforward", "cards_002"),
    ("cards_005", "arctic_a0007"),
    ("goforward", "arctic_a0007", "cards_003"),
    ("arctic_a0009", "cards_005", "cards_001"),
)
# The integration test's sentence (8.5 s): one tiny.en reads the same in its partials and its final,
# so that any word the final contradicts is the partials' fault, not the recogniser's. (On the
# benchmark's sentences tiny.en's partials sometimes settle on a wrong word, "Gregs in" for
# "Gregson": the benchmark counts those as rewrites.)
TEST_SENTENCE = ("arctic_a0007", "cards_005", "goforward")


def _trimmed(path: Path, threshold: float = 0.02, margin_s: float = 0.08) -> np.ndarray:
    audio, rate = read_wav(path)
    if rate != RATE:
        import soxr

        audio = soxr.resample(audio, rate, RATE).astype(np.float32)
    loud = np.flatnonzero(np.abs(audio) > threshold)
    margin = int(margin_s * RATE)
    return audio[max(0, loud[0] - margin) : loud[-1] + margin] if len(loud) else audio


def sentence(names: tuple[str, ...], speech_dir: Path = SPEECH, gap_s: float = 0.12) -> tuple[np.ndarray, str]:
    """The clips `names` (file stems) joined as one utterance, and its reference transcript."""
    refs = dict(r.split("\t", 1) for r in (speech_dir / "transcripts.tsv").read_text().strip().splitlines()[1:])
    gap = np.zeros(int(gap_s * RATE), np.float32)
    parts: list[np.ndarray] = []
    for name in names:
        parts += [_trimmed(speech_dir / f"{name}.wav"), gap]
    return np.concatenate(parts[:-1]), " ".join(refs[f"{name}.wav"] for name in names)


def write(out_dir: Path, speech_dir: Path = SPEECH) -> list[Path]:
    """Write the long sentences and their transcripts.tsv into `out_dir`; returns the wav paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, paths = ["file\ttext"], []
    for i, names in enumerate(SENTENCES, 1):
        audio, text = sentence(names, speech_dir)
        path = out_dir / f"long_{i:02d}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
        rows.append(f"{path.name}\t{text}")
        paths.append(path)
    (out_dir / "transcripts.tsv").write_text("\n".join(rows) + "\n")
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        sys.exit("usage: python -m kombain.loadtest.long_sentences OUT_DIR  (writes long_NN.wav and transcripts.tsv)")
    for p in write(Path(sys.argv[1])):
        print(p)
