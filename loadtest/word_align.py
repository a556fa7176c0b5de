"""`python -m kombain.loadtest words`: word start times of `POST /v1/audio/transcriptions`
(verbose_json, timestamp_granularities=["word"]) against an independent reference.

The reference knows nothing of Whisper: recorded clips are laid end to end with gaps of known
length (0.4-1.5 s of faint noise), and the start of each clip's speech is found from its energy
alone (10 ms frames smoothed over 30 ms: the first frame 25 % of the way from the clip's noise
floor to its peak in dB, walked back while it stays 10 dB over the floor, which keeps weak
fricatives like the 'h' of 'he'). Each clip's first word must start there. Pauses of 200 ms or more inside a clip give more
word starts: the speech after the pause begins a word, matched to the word whose start is
nearest (within 0.5 s). Word ends are checked the same way against each clip's last voiced frame.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import time
import wave
from pathlib import Path

import numpy as np

FRAME = 160  # 10 ms at 16 kHz


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("words", help="word start times of REST transcription against an energy reference")
    p.add_argument("--audio", type=Path, default=Path("tests/data/speech"))
    p.add_argument("--orders", type=int, default=6, help="recordings made, each of every clip in a random order")
    p.add_argument("--seed", type=int, default=21)
    p.add_argument("--url", help="an already running server (default: start one here)")
    p.add_argument("--model", default=None, help="KOMBAIN_STT_MODEL for a server started here")
    p.add_argument("--out", type=Path, default=Path("loadtest/results"))


def frame_db(audio: np.ndarray) -> np.ndarray:
    f = audio[: len(audio) // FRAME * FRAME].reshape(-1, FRAME)
    return np.asarray(10 * np.log10((f.astype(np.float64) ** 2).mean(axis=1) + 1e-12))


def speech_marks(audio: np.ndarray) -> tuple[float, float, list[float]]:
    """(onset s, offset s, onsets after inner pauses of >= 200 ms) of one clip, from energy."""
    raw = frame_db(audio)
    db = np.convolve(np.pad(raw, 1, mode="edge"), np.ones(3) / 3, mode="valid")  # 30 ms smoothing: one loud noise frame is not speech
    floor = float(np.mean(np.sort(raw)[: max(1, len(raw) * 3 // 10)]))  # the quietest 30 % of frames
    peak = float(np.percentile(raw, 99))
    loud = db > floor + 0.25 * (peak - floor)
    weak = db > floor + 10
    idx = np.flatnonzero(loud)
    first, last = int(idx[0]), int(idx[-1])
    while first > 0 and weak[first - 1]:
        first -= 1
    while last + 1 < len(db) and weak[last + 1]:
        last += 1
    inner: list[float] = []
    quiet = 0
    for i in range(first, last + 1):
        if not weak[i]:
            quiet += 1
            continue
        if quiet >= 20 and loud[i : i + 10].any():
            inner.append(i * FRAME / 16000)
        quiet = 0
    return first * FRAME / 16000, (last + 1) * FRAME / 16000, inner


def _wav(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def build(clips: list[np.ndarray], rng: random.Random) -> tuple[np.ndarray, list[tuple[float, float, list[float]]]]:
    """The clips in a random order with noise gaps; each clip's (onset, offset, inner onsets) in the whole."""
    nrng = np.random.default_rng(rng.randrange(1 << 30))
    parts: list[np.ndarray] = []
    marks = []
    t = 0
    for clip in rng.sample(clips, len(clips)):
        gap = int(rng.uniform(0.4, 1.5) * 16000)
        parts.append((nrng.standard_normal(gap) * 10 ** (-60 / 20)).astype(np.float32))
        t += gap
        on, off, inner = speech_marks(clip)
        marks.append((t / 16000 + on, t / 16000 + off, [t / 16000 + x for x in inner]))
        parts.append(clip)
        t += len(clip)
    parts.append(np.zeros(8000, np.float32))
    return np.concatenate(parts), marks


def score(words: list[dict], marks: list[tuple[float, float, list[float]]]) -> dict[str, list[float]]:
    """Signed errors (s, Whisper minus reference) of first-word starts, after-pause starts and last-word ends."""
    first, inner, ends = [], [], []
    bounds = [m[0] for m in marks[1:]] + [float("inf")]
    for (on, off, pauses), nxt in zip(marks, bounds, strict=True):
        # The clip's words: those whose middle lies between half-way into the gap before and after it.
        lo = on - 0.2
        hi = (off + nxt) / 2 if nxt != float("inf") else nxt
        mine = [w for w in words if lo <= (w["start"] + w["end"]) / 2 < hi]
        if not mine:
            continue
        first.append(mine[0]["start"] - on)
        ends.append(mine[-1]["end"] - off)
        for p in pauses:
            near = min(mine[1:], key=lambda w: abs(w["start"] - p), default=None)
            if near is not None and abs(near["start"] - p) < 0.5:
                inner.append(near["start"] - p)
    return {"first_word_start": first, "after_pause_start": inner, "last_word_end": ends}


def _stats(errs: list[float]) -> dict[str, float | int]:
    a = np.abs(np.array(errs)) * 1000
    if not len(a):
        return {"n": 0}
    return {"n": len(a), "median_abs_ms": round(float(np.median(a)), 1), "p90_abs_ms": round(float(np.percentile(a, 90)), 1),
            "mean_signed_ms": round(float(np.mean(errs)) * 1000, 1)}


async def _measure(url: str, audio_dir: Path, orders: int, seed: int) -> dict:
    import openai

    from kombain.clients.realtime_client import read_wav

    rows = [r.split("\t", 1)[0] for r in (audio_dir / "transcripts.tsv").read_text().strip().splitlines()[1:]]
    clips = []
    for name in rows:
        a, rate = read_wav(audio_dir / name)
        if rate != 16000:
            import soxr

            a = soxr.resample(a, rate, 16000).astype(np.float32)
        clips.append(a)
    client = openai.OpenAI(api_key="unused", base_url=url + "/v1", max_retries=0, timeout=300)
    rng = random.Random(seed)
    errors: dict[str, list[float]] = {"first_word_start": [], "after_pause_start": [], "last_word_end": []}
    took, audio_s = 0.0, 0.0
    for _ in range(orders):
        audio, marks = build(clips, rng)
        t0 = time.perf_counter()
        result = await asyncio.to_thread(
            client.audio.transcriptions.create, model="whisper-1", file=("talk.wav", _wav(audio)),
            response_format="verbose_json", timestamp_granularities=["word"])
        took += time.perf_counter() - t0
        audio_s += len(audio) / 16000
        words = [{"word": w.word, "start": w.start, "end": w.end} for w in result.words or []]
        for k, v in score(words, marks).items():
            errors[k] += v
    return {"test": "words", "recordings": orders, "audio_s": round(audio_s, 1), "seconds": round(took, 2),
            "stats": {k: _stats(v) for k, v in errors.items()}, "errors_s": errors}


def run(args: argparse.Namespace) -> int:
    from kombain.loadtest.server_proc import local_server

    args.out.mkdir(parents=True, exist_ok=True)
    if args.url:
        result = asyncio.run(_measure(args.url, args.audio, args.orders, args.seed))
    else:
        env = {"KOMBAIN_STT_MODEL": args.model} if args.model else {}
        with local_server(env, args.out / "server.log") as (url, _pid):
            result = asyncio.run(_measure(url, args.audio, args.orders, args.seed))
    result["model"] = args.model or "default"
    print(f"{result['recordings']} recordings, {result['audio_s']} s of audio, transcribed in {result['seconds']} s")
    for k, s in result["stats"].items():
        print(f"  {k:18s} {s}")
    path = args.out / f"words-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")
    return 0
