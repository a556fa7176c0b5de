"""`python -m kombain.loadtest.diarize_bench`: who spoke when, on a conversation assembled from recorded speech.

Four real speakers in `tests/data/speech` (told apart by their recordings' provenance, pitch and
voice embeddings, docs/performance.md): the card reader (cards_001-005), two CMU ARCTIC speakers
(arctic_a0007, arctic_a0009) and the 'go forward' speaker. Turns of 2-8 s (a speaker's clips
joined with 0.1-0.25 s pauses), gaps of 0.3-1 s, the next speaker always another; each turn at a
random gain (+-6 dB) over faint noise (-60 dBFS). The reference turn runs from its first clip's
energy onset to its last clip's offset.

Measured through `POST /v1/audio/transcriptions` (`gpt-4o-transcribe-diarize`, `diarized_json`):
diarization error rate (pyannote.metrics, collar 0.25 s), known speakers named right (share of
their reference turns whose most-overlapping output speaker carries their name), and time; then
the diarization stage alone (VAD, embeddings, clustering) in this process, to extrapolate to 1 h.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import random
import sys
import time
import wave
from pathlib import Path

import numpy as np

SPEAKERS = {
    "cards": ["cards_001.wav", "cards_002.wav", "cards_003.wav", "cards_004.wav"],
    "arctic_a": ["arctic_a0007.wav"],
    "arctic_b": ["arctic_a0009.wav"],
    "forward": ["goforward.wav"],
}
# Reference samples of known speakers: the card reader's is a clip the conversation never uses;
# the others have one recording each, so theirs is the same audio the conversation uses (an
# upper bound, reported apart).
DISJOINT_REFERENCES = {"cards": ["cards_005.wav"]}


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("diarize", help="speaker diarization: DER, known-speaker naming, time")
    p.add_argument("--audio", type=Path, default=Path("tests/data/speech"))
    p.add_argument("--minutes", type=float, default=5.0, help="length of each assembled conversation")
    p.add_argument("--conversations", type=int, default=2)
    p.add_argument("--seed", type=int, default=21)
    p.add_argument("--url", help="an already running server (default: start one here)")
    p.add_argument("--out", type=Path, default=Path("loadtest/results"))
    p.add_argument("--voice", type=int, default=0, metavar="N",
                   help="instead: N streaming callers' latency with no diarization, then while diarizations "
                        "run back to back (the voice path's busy/idle ratio)")
    p.add_argument("--voice-load", choices=("diarize", "transcribe"), default="diarize",
                   help="with --voice: the requests run back to back (transcribe: plain verbose_json, to compare)")


def _load(audio_dir: Path, name: str) -> np.ndarray:
    from kombain.clients.realtime_client import read_wav

    a, rate = read_wav(audio_dir / name)
    if rate != 16000:
        import soxr

        a = soxr.resample(a, rate, 16000).astype(np.float32)
    return a


def wav_bytes(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def build_conversation(audio_dir: Path, seconds: float, seed: int) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """(16 kHz audio, reference turns (start s, end s, speaker))."""
    from kombain.loadtest.word_align import speech_marks

    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    clips = {s: [(_load(audio_dir, n), speech_marks(_load(audio_dir, n))) for n in names] for s, names in SPEAKERS.items()}
    parts: list[np.ndarray] = []
    turns: list[tuple[float, float, str]] = []
    t = 0
    last = None
    while t < seconds * 16000:
        who = rng.choice([s for s in SPEAKERS if s != last])
        last = who
        target = rng.uniform(2.0, 8.0)
        gap = int(rng.uniform(0.3, 1.0) * 16000)
        parts.append(np.zeros(gap, np.float32))
        t += gap
        gain = 10 ** (rng.uniform(-6, 6) / 20)
        start = end = None
        length = 0.0
        while True:
            clip, (on, off, _) = rng.choice(clips[who])
            if start is None:
                start = t / 16000 + on
            elif length + (off - on) > 8.0:
                break
            end = t / 16000 + off
            parts.append(clip * gain)
            t += len(clip)
            length = end - start
            if length >= target:
                break
            pause = int(rng.uniform(0.1, 0.25) * 16000)
            parts.append(np.zeros(pause, np.float32))
            t += pause
        assert start is not None and end is not None
        turns.append((start, end, who))
    parts.append(np.zeros(8000, np.float32))
    audio = np.concatenate(parts)
    audio = audio + (nrng.standard_normal(len(audio)) * 10 ** (-60 / 20)).astype(np.float32)
    return audio.astype(np.float32), turns


def der(reference: list[tuple[float, float, str]], hypothesis: list[tuple[float, float, str]]) -> dict[str, float]:
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    ref, hyp = Annotation(), Annotation()
    for i, (a, b, s) in enumerate(reference):
        ref[Segment(a, b), i] = s
    for i, (a, b, s) in enumerate(hypothesis):
        if b > a:
            hyp[Segment(a, b), i] = s
    metric = DiarizationErrorRate(collar=0.25, skip_overlap=False)
    d = metric(ref, hyp, detailed=True)
    total = d["total"] or 1.0
    return {"der": round(d["diarization error rate"], 4), "missed": round(d["missed detection"] / total, 4),
            "false_alarm": round(d["false alarm"] / total, 4), "confusion": round(d["confusion"] / total, 4)}


def naming(reference: list[tuple[float, float, str]], hypothesis: list[tuple[float, float, str]],
           known: list[str]) -> tuple[int, int, int]:
    """(turns of known speakers named right, turns of known speakers, turns of others given a known name)."""
    right = total = wrong_other = 0
    for a, b, who in reference:
        overlap: dict[str, float] = {}
        for c, d, label in hypothesis:
            o = min(b, d) - max(a, c)
            if o > 0:
                overlap[label] = overlap.get(label, 0.0) + o
        best = max(overlap, key=lambda k: overlap[k]) if overlap else None
        if who in known:
            total += 1
            right += best == who
        elif best in known:
            wrong_other += 1
    return right, total, wrong_other


def _data_url(audio: np.ndarray) -> str:
    return "data:audio/wav;base64," + base64.b64encode(wav_bytes(audio)).decode()


async def _measure(url: str, args: argparse.Namespace) -> dict:
    import openai

    client = openai.OpenAI(api_key="unused", base_url=url + "/v1", max_retries=0, timeout=1800)
    conditions = {
        "unknown": {},
        "disjoint": {s: np.concatenate([_load(args.audio, n) for n in ns]) for s, ns in DISJOINT_REFERENCES.items()},
        "all_named_same_audio": {s: _load(args.audio, ns[0]) for s, ns in SPEAKERS.items() if s != "cards"}
        | {s: np.concatenate([_load(args.audio, n) for n in ns]) for s, ns in DISJOINT_REFERENCES.items()},
    }
    runs = []
    for k in range(args.conversations):
        audio, turns = build_conversation(args.audio, args.minutes * 60, args.seed + k)
        data = wav_bytes(audio)
        for cond, refs in conditions.items():
            names = list(refs)
            t0 = time.perf_counter()
            r = await asyncio.to_thread(
                client.audio.transcriptions.create, model="gpt-4o-transcribe-diarize", file=("talk.wav", data),
                response_format="diarized_json", chunking_strategy="auto",
                **({"known_speaker_names": names, "known_speaker_references": [_data_url(refs[n]) for n in names]}
                   if names else {}))
            took = time.perf_counter() - t0
            hyp = [(s.start, s.end, s.speaker) for s in r.segments]
            right, total, wrong = naming(turns, hyp, names)
            runs.append({"conversation": k, "condition": cond, "audio_s": round(len(audio) / 16000, 1),
                         "turns": len(turns), "speakers_found": len({h[2] for h in hyp}), "request_s": round(took, 2),
                         **der(turns, hyp), "named_right": right, "named_turns": total, "others_given_a_name": wrong})
            print(json.dumps(runs[-1]))
    return {"runs": runs, "stage": _stage_timing(args)}


def _stage_timing(args: argparse.Namespace) -> dict:
    """The diarization stage alone (VAD, embeddings, clustering), in this process, on one conversation."""
    import tempfile

    from kombain.streaming.diarize import cluster, windows
    from kombain.streaming.speaker_encoder import SpeakerEncoder
    from kombain.streaming.speech_regions import speech_probabilities, speech_regions
    from kombain.streaming.vad import SileroVadModel

    audio, _ = build_conversation(args.audio, args.minutes * 60, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        encoder = SpeakerEncoder.load(Path(tmp))
    vad = SileroVadModel.load()
    t0 = time.perf_counter()
    regions = speech_regions(speech_probabilities(vad, audio))
    t1 = time.perf_counter()
    spans = windows(regions)
    emb = encoder.embed_windows(audio, spans)
    t2 = time.perf_counter()
    cluster(emb)
    t3 = time.perf_counter()
    seconds = len(audio) / 16000
    per_hour = (t3 - t0) / seconds * 3600
    return {"audio_s": round(seconds, 1), "windows": len(spans), "vad_s": round(t1 - t0, 2),
            "embeddings_s": round(t2 - t1, 2), "clustering_s": round(t3 - t2, 3),
            "extrapolated_s_per_hour": round(per_hour, 1)}


async def _voice(url: str, args: argparse.Namespace) -> dict:
    """Streaming callers (loadtest stt, words off) idle, then with diarization requests back to back."""
    import openai

    from kombain.loadtest.stt import run_stt

    client = openai.OpenAI(api_key="unused", base_url=url + "/v1", max_retries=0, timeout=1800)
    audio, _ = build_conversation(args.audio, args.minutes * 60, args.seed)
    data = wav_bytes(audio)
    idle = await run_stt(url, args.voice, args.audio, words=False)
    stop = asyncio.Event()
    done = 0

    def diarize_loop() -> None:
        nonlocal done
        while not stop.is_set():
            if args.voice_load == "diarize":
                client.audio.transcriptions.create(model="gpt-4o-transcribe-diarize", file=("talk.wav", data),
                                                   response_format="diarized_json")
            else:
                client.audio.transcriptions.create(model="whisper-1", file=("talk.wav", data),
                                                   response_format="verbose_json")
            done += 1

    worker = asyncio.create_task(asyncio.to_thread(diarize_loop))
    await asyncio.sleep(3)  # the first request is decoding before the callers start
    try:
        busy = await run_stt(url, args.voice, args.audio, words=False)
    finally:
        stop.set()
        await worker
    out: dict = {"sessions": args.voice, "load": args.voice_load, "requests_during": done, "stages": {}}
    for stage in ("stt_final", "final_decode", "partial_lag"):
        a, b = idle["stages"].get(stage, {}), busy["stages"].get(stage, {})
        out["stages"][stage] = {"idle_p95_ms": a.get("p95_ms"), "busy_p95_ms": b.get("p95_ms"),
                                "ratio": round(b["p95_ms"] / a["p95_ms"], 2) if a.get("p95_ms") and b.get("p95_ms") else None}
    return out


def run(args: argparse.Namespace) -> int:
    from kombain.loadtest.server_proc import local_server

    args.out.mkdir(parents=True, exist_ok=True)
    if args.voice:
        if args.url:
            result = asyncio.run(_voice(args.url, args))
        else:
            with local_server({}, args.out / "server.log") as (url, _pid):
                result = asyncio.run(_voice(url, args))
        print(json.dumps(result, indent=1))
        path = args.out / f"diarize-voice-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.write_text(json.dumps(result, indent=1))
        return 0
    if args.url:
        result = asyncio.run(_measure(args.url, args))
    else:
        with local_server({}, args.out / "server.log") as (url, _pid):
            result = asyncio.run(_measure(url, args))
    print("diarization stage alone:", json.dumps(result["stage"]))
    path = args.out / f"diarize-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kombain.loadtest.diarize_bench", description=__doc__)
    add_parser(ap.add_subparsers(dest="test", required=True))
    return run(ap.parse_args(["diarize", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
