"""Word times of the recorded clips, from an offline faster-whisper decode (tiny.en, word_timestamps):
the reference the turn-taking and speech-to-text benchmarks time against."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def clips_with_word_times(audio_dir: Path) -> Iterator[tuple[str, str, np.ndarray, int, list[tuple[str, float, float]]]]:
    """Each clip of `audio_dir/transcripts.tsv`, in order: (file name, reference text, audio, its
    rate, [(word, start s, end s)])."""
    import soxr
    from faster_whisper import WhisperModel

    from kombain.clients.realtime_client import read_wav
    from kombain.streaming.models import resolve_stt_model

    rows = [r.split("\t", 1) for r in (audio_dir / "transcripts.tsv").read_text().strip().splitlines()[1:]]
    with tempfile.TemporaryDirectory() as tmp:
        model = WhisperModel(str(resolve_stt_model("tiny.en", Path(tmp))), device="cpu", compute_type="int8")
        for name, text in rows:
            audio, rate = read_wav(audio_dir / name)
            a16 = (soxr.resample(audio, rate, 16000) if rate != 16000 else audio).astype(np.float32)
            segments, _ = model.transcribe(a16, word_timestamps=True, temperature=0)
            words = [(w.word.strip(), float(w.start), float(w.end)) for s in segments for w in (s.words or [])]
            yield name, text, audio, rate, words
        del model
