"""Long test audio without a file on disk: the recorded clips, each block of them followed by
silence, encoded as FLAC with PyAV (for memory soaks and the bounded-decoding tests)."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np

RATE = 16000


def clips_audio(speech_dir: Path, gap_s: float = 0.5) -> tuple[np.ndarray, list[str]]:
    """Every clip listed in `speech_dir/transcripts.tsv`, each followed by `gap_s` of silence,
    as 16 kHz PCM16; and their transcripts."""
    from kombain.streaming.decode_file import decode_audio_file

    rows = (speech_dir / "transcripts.tsv").read_text().strip().splitlines()[1:]
    parts, texts = [], []
    for name, text in (r.split("\t", 1) for r in rows):
        parts += [decode_audio_file((speech_dir / name).read_bytes()), np.zeros(int(gap_s * RATE), np.float32)]
        texts.append(text)
    return (np.clip(np.concatenate(parts), -1, 1) * 32767).astype("<i2"), texts


def long_flac(speech_dir: Path, seconds: float, every_s: float = 600.0) -> tuple[bytes, int]:
    """FLAC of `seconds` of audio: the clips at 0, every_s, 2 * every_s, ..., silence between
    (cut off at `seconds`). Returns the file and how many times the clips were placed whole."""
    speech, _ = clips_audio(speech_dir)
    buf = io.BytesIO()
    block = RATE * 10
    placed = 0
    with av.open(buf, "w", format="flac") as container:
        stream = container.add_stream("flac", rate=RATE)
        stream.layout = "mono"

        def put(pcm: np.ndarray) -> None:
            for i in range(0, len(pcm), block):
                frame = av.AudioFrame.from_ndarray(pcm[i : i + block].reshape(1, -1), format="s16", layout="mono")
                frame.sample_rate = RATE
                for packet in stream.encode(frame):
                    container.mux(packet)

        total, at = int(seconds * RATE), 0
        silence = np.zeros(block, "<i2")
        while at < total:
            part = speech[: total - at]
            put(part)
            placed += len(part) == len(speech)
            at += len(part)
            gap = min(max(0, int(every_s * RATE) - len(speech)), total - at)
            at += gap
            while gap > 0:
                put(silence[: min(gap, block)])
                gap -= min(gap, block)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue(), placed
