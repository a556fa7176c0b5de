"""How much silence a live final needs after the last voiced frame (python -m kombain.loadtest.tail_sweep).

The live path ends a turn's audio `tail` ms after the VAD's last voiced frame (streaming/
transcriber.py, `_TAIL_SAMPLES`), and the speculative decode at a pause waits for that tail before
it starts: a shorter tail is words sooner. This decodes every clip of the given folders as a live
final cut at the last frame Silero VAD scores voiced (threshold 0.5) plus each tail, and prints the
WER per tail and the clips whose last word changes.

    python -m kombain.loadtest.tail_sweep --audio tests/data/speech tests/data/speech_heldout
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import numpy as np

from kombain.loadtest.wer import normalize, wer
from kombain.loadtest.window_sweep import load_wav
from kombain.server.settings import Settings
from kombain.streaming.stt_engine import load_engine
from kombain.streaming.vad import FRAME_SAMPLES, SileroVadModel
from kombain.streaming.whisper_runtime import DecodeOptions

RATE = 16000


def last_voiced_end(vad: SileroVadModel, audio: np.ndarray, threshold: float = 0.5) -> int:
    """The sample after the last 32 ms frame the VAD scores voiced (the clip's length if none is)."""
    probs = vad.new_stream().process(audio)
    voiced = [i for i, p in enumerate(probs) if p >= threshold]
    return (voiced[-1] + 1) * FRAME_SAMPLES if voiced else len(audio)


def read_set(folder: Path) -> list[tuple[str, str, np.ndarray]]:
    out = []
    for line in (folder / "transcripts.tsv").read_text().splitlines():
        name, _, text = line.partition("\t")
        if name == "file" or not text:
            continue
        out.append((name, text, load_wav(folder / name)))
    return out


async def sweep(folders: list[Path], tails: list[int], model: str) -> None:
    vad = SileroVadModel.load()
    runtime = load_engine(model, data_dir=Settings().data_dir)
    clips = [(n, ref, np.concatenate([a, np.zeros(RATE, np.float32)])) for f in folders for n, ref, a in read_set(f)]
    ends = [last_voiced_end(vad, a) for _, _, a in clips]
    try:
        for tail in tails:
            pairs = []
            for (_name, ref, audio), end in zip(clips, ends, strict=True):
                result = await runtime.transcribe(audio[: end + tail * RATE // 1000], "final", DecodeOptions())
                pairs.append((ref, result.text))
            changed = [n for (n, ref, _), (_, hyp) in zip(clips, pairs, strict=True)
                       if normalize(ref)[-1:] != normalize(hyp)[-1:]]
            print(f"tail {tail:4d} ms: WER {wer(pairs):.3f} over {len(pairs)} clips; last word wrong: {', '.join(changed) or '-'}",
                  flush=True)
    finally:
        await runtime.aclose()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m kombain.loadtest.tail_sweep", description=__doc__.splitlines()[0])
    p.add_argument("--audio", type=Path, nargs="+", default=[Path("tests/data/speech")])
    p.add_argument("--tails", type=int, nargs="+", default=[0, 60, 100, 160, 200])
    p.add_argument("--model", default="tiny.en")
    args = p.parse_args(argv)
    asyncio.run(sweep(args.audio, args.tails, args.model))


if __name__ == "__main__":
    main()
