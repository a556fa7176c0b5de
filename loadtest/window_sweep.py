"""Speed/accuracy of the live decoder's encoder window (python -m loadtest.window_sweep).

Whisper is trained on 30 s windows and faster-whisper pads every input to 30 s; the live path
decodes with a window of `max(min_window, audio + pad)` seconds. This measures latency and
WER on recorded speech for several windows against the 30 s offline baseline of the same model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import wave
from pathlib import Path

import numpy as np

from kombain.loadtest.wer import wer
from kombain.streaming.whisper_runtime import DecodeOptions, WhisperRuntime


def load_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        if w.getframerate() != 16000 or w.getnchannels() != 1:
            raise SystemExit(f"{path}: need 16 kHz mono")
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768


def clips(audio_dir: Path) -> list[tuple[np.ndarray, str]]:
    rows = (audio_dir / "transcripts.tsv").read_text().strip().splitlines()[1:]
    return [(load_wav(audio_dir / n), t) for n, t in (r.split("\t", 1) for r in rows)]


async def sweep(model: str, audio_dir: Path, reps: int) -> list[dict[str, object]]:
    rt = WhisperRuntime.load(model, data_dir=Path.home() / ".local/share/kombain")
    data = clips(audio_dir)
    configs: list[tuple[str, str, DecodeOptions]] = [("offline 30 s, beam 5", "offline", DecodeOptions(beam_size=5))]
    configs.append(("offline 30 s, beam 1", "offline", DecodeOptions(beam_size=1)))
    for window in (4.0, 6.0, 8.0, 10.0, 15.0, 20.0):
        for beam in (1, 5):
            configs.append((f"window {window:.0f} s, beam {beam}", "final", DecodeOptions(beam_size=beam, min_window=window)))
    rows = []
    for label, kind, opts in configs:
        times, pairs = [], []
        for _ in range(reps):
            pairs = []
            for audio, ref in data:
                r = await rt.transcribe(audio, kind, opts)  # type: ignore[arg-type]
                times.append(r.inference_seconds)
                pairs.append((ref, r.text))
        q = statistics.quantiles(times, n=20)
        row = {"config": label, "wer": round(wer(pairs), 4), "p50_ms": round(statistics.median(times) * 1000, 1),
               "p95_ms": round(q[18] * 1000, 1), "texts": [h for _, h in pairs]}
        print(f"{label:32s} WER {row['wer']:.3f}  p50 {row['p50_ms']:6.1f} ms  p95 {row['p95_ms']:6.1f} ms")
        rows.append(row)
    await rt.aclose()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--audio", type=Path, default=Path("tests/data/speech"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = asyncio.run(sweep(args.model, args.audio, args.reps))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
