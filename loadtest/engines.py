"""`python -m kombain.loadtest engines`: speech engines side by side, to pick the default by measurement.

Offline, in this process: each engine (KOMBAIN_STT_MODEL names: tiny.en, base, moonshine-base, ...)
decodes every recorded clip as a live final (its `transcribe(kind="final")`: the same windows,
guards and workers as a call) in three versions: clean, phone-coded (8 kHz mu-law and back, as a
Twilio or SIP call hears it) and with white noise at 15 dB SNR (seeded). Reported per engine and
version: WER against transcripts.tsv, decode time per turn p50/p95, CPU seconds per audio second
(this process's CPU over the audio decoded), and the resident memory the engine added when it
loaded. The engines take turns clip by clip, in an order rotated every round, so that load from
other work on a shared machine lands on all of them alike. With several --audio folders (say the
project's clips and held-out speech) the same figures are also given per folder, from the same
interleaved run, with each engine's worst-heard clips.

Live, over /v1/realtime: one server per live engine, all started up front, each run of
`loadtest stt` (stagger 1 and 4 callers, a burst of 8) given to the engines in turn (rotated per
round): end of speech -> final p50/p95 (`eos_final`), word lag, WER, server CPU and memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from kombain.loadtest.stats import summary
from kombain.loadtest.wer import edit_distance, normalize, wer

AUDIO_DIRS = (Path("tests/data/speech"), Path("/work/shared/speech"))
VERSIONS = ("clean", "phone", "noisy")
LIVE_RUNS = ((1, "stagger"), (4, "stagger"), (8, "burst"))
LENGTHS = ((0.0, 3.0), (3.0, 6.0), (6.0, 30.0))  # clip length bands (s) for decode cost by length


def add_parser(sub: Any) -> None:
    p = sub.add_parser("engines", help="speech engines side by side: WER, decode time, CPU, memory, live latency")
    p.add_argument("--engines", nargs="*", default=["tiny.en", "base", "moonshine-base"],
                   help="KOMBAIN_STT_MODEL values decoded offline (none: live only)")
    p.add_argument("--live", nargs="*", default=["tiny.en", "moonshine-base"],
                   help="engines also run over /v1/realtime (none: offline only)")
    p.add_argument("--rounds", type=int, default=3, help="offline passes over the clips (decode times pool)")
    p.add_argument("--versions", nargs="+", choices=VERSIONS, default=list(VERSIONS),
                   help="offline versions of each clip (default: all)")
    p.add_argument("--live-rounds", type=int, default=1, help="passes over the live runs")
    p.add_argument("--live-runs", nargs="+", default=[f"{n}:{a}" for n, a in LIVE_RUNS], metavar="N:ARRIVALS",
                   help="live runs as callers:arrivals (stagger or burst); default 1:stagger 4:stagger 8:burst")
    p.add_argument("--audio", type=Path, nargs="+", default=list(AUDIO_DIRS),
                   help="directories of WAV clips with transcripts.tsv (duplicates are decoded once)")
    p.add_argument("--out", type=Path, default=Path("loadtest/results"))


def run(args: argparse.Namespace) -> int:
    dirs = [d for d in args.audio if (d / "transcripts.tsv").is_file()]
    clips = load_clips(dirs)
    sets = _set_names(dirs)
    clip_set: dict[str, str] = {}
    for name, d in zip(*_clip_dirs(dirs), strict=True):
        clip_set.setdefault(name, sets[d])  # a clip in two folders is decoded once, as the first's
    print(f"{len(clips)} clips ({sum(len(a) for _, a, _ in clips) / 16000:.1f} s), versions {', '.join(args.versions)}")
    report: dict[str, Any] = {"clips": len(clips), "machine": _machine()}
    if args.engines:
        report["offline"] = asyncio.run(offline(args.engines, clips, args.rounds, args.versions,
                                                clip_set if len(set(clip_set.values())) > 1 else None))
        _print_offline(report["offline"], args.versions)
    if args.live:
        runs = [(int(n), a) for n, _, a in (r.partition(":") for r in args.live_runs)]
        report["live"] = live(args.live, args.audio[0], args.live_rounds, args.out, runs)
        _print_live(report["live"])
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"engines-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {path}")
    return 0


def load_clips(dirs: list[Path]) -> list[tuple[str, np.ndarray, str]]:
    """(name, 16 kHz float32 audio, reference) of every clip, each distinct recording once."""
    from kombain.clients.realtime_client import read_wav
    from kombain.streaming.audio import resample

    seen: set[str] = set()
    out = []
    for d in dirs:
        with open(d / "transcripts.tsv", newline="") as f:
            for row in list(csv.reader(f, delimiter="\t"))[1:]:
                data = (d / row[0]).read_bytes()
                digest = hashlib.sha256(data).hexdigest()
                if digest in seen:
                    continue
                seen.add(digest)
                audio, rate = read_wav(d / row[0])
                out.append((row[0], resample(audio, rate, 16000).astype(np.float32), row[1]))
    return out


def _clip_dirs(dirs: list[Path]) -> tuple[list[str], list[Path]]:
    """Every (clip name, folder) listed in the folders' transcripts.tsv, in order."""
    names, where = [], []
    for d in dirs:
        with open(d / "transcripts.tsv", newline="") as f:
            for row in list(csv.reader(f, delimiter="\t"))[1:]:
                names.append(row[0])
                where.append(d)
    return names, where


def _set_names(dirs: list[Path]) -> dict[Path, str]:
    """A short label per folder: its name, or its path where two folders share a name."""
    names = [d.name for d in dirs]
    return {d: (d.name if names.count(d.name) == 1 else str(d)) for d in dirs}


def version(audio: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """The clip as heard over the phone (8 kHz mu-law and back) or with white noise at 15 dB SNR."""
    from kombain.streaming.audio import AudioFormat, decode, encode, resample

    if kind == "phone":
        fmt = AudioFormat("mulaw", 8000)
        return resample(decode(encode(resample(audio, 16000, 8000), fmt), fmt), 8000, 16000).astype(np.float32)
    if kind == "noisy":
        power = float(np.mean(np.square(audio))) or 1e-8
        noise = np.random.default_rng(seed).standard_normal(len(audio)) * np.sqrt(power / 10 ** 1.5)
        return np.clip(audio + noise, -1, 1).astype(np.float32)
    return audio


async def offline(engines: list[str], clips: list[tuple[str, np.ndarray, str]], rounds: int,
                  versions: list[str] | tuple[str, ...] = VERSIONS,
                  clip_set: dict[str, str] | None = None) -> dict[str, Any]:
    """Per engine and version: WER, decode times, CPU per audio second (and the same per set of
    clips where `clip_set` labels each clip with its set)."""
    import psutil

    from kombain.streaming.stt_engine import load_engine
    from kombain.streaming.whisper_runtime import DecodeOptions

    proc = psutil.Process()
    data_dir = Path(os.environ.get("KOMBAIN_DATA_DIR", Path.home() / ".local/share/kombain"))
    loaded: dict[str, Any] = {}
    memory: dict[str, float] = {}
    for name in engines:
        before = proc.memory_info().rss
        loaded[name] = await asyncio.to_thread(load_engine, name, data_dir=data_dir)
        memory[name] = (proc.memory_info().rss - before) / 2**20
    inputs = [(clip, kind, version(audio, kind, i)) for i, (clip, audio, _) in enumerate(clips) for kind in versions]
    refs = {clip: ref for clip, _, ref in clips}
    times: dict[tuple[str, str, str], list[float]] = {}
    cpu: dict[tuple[str, str, str], float] = {}
    audio_s: dict[tuple[str, str, str], float] = {}
    texts: dict[tuple[str, str, str], list[tuple[str, str, str]]] = {}
    by_length: dict[str, list[tuple[float, float, float]]] = {name: [] for name in engines}
    options = DecodeOptions()
    for r in range(rounds):
        for i, (clip, kind, audio) in enumerate(inputs):
            order = engines[(r + i) % len(engines):] + engines[:(r + i) % len(engines)]
            for name in order:
                c0, t0 = time.process_time(), time.perf_counter()
                result = await loaded[name].transcribe(audio, "final", options)
                took, used = time.perf_counter() - t0, time.process_time() - c0
                key = (name, kind, (clip_set or {}).get(clip, ""))
                times.setdefault(key, []).append(took)
                by_length[name].append((len(audio) / 16000, took, used))
                cpu[key] = cpu.get(key, 0.0) + used
                audio_s[key] = audio_s.get(key, 0.0) + len(audio) / 16000
                if r == 0:
                    texts.setdefault(key, []).append((clip, refs[clip], result.text))
    for rt in loaded.values():
        await rt.aclose()

    def figures(keys: list[tuple[str, str, str]]) -> dict[str, Any]:
        said = [t for k in keys for t in texts[k]]
        return {
            "wer": round(wer([(ref, hyp) for _, ref, hyp in said]), 4),
            "decode": summary([x for k in keys for x in times[k]]),
            "cpu_per_audio_s": round(sum(cpu[k] for k in keys) / sum(audio_s[k] for k in keys), 4),
            "texts": [hyp for _, _, hyp in said],
            "worst": _worst(said),
        }

    out: dict[str, Any] = {}
    for name in engines:
        per: dict[str, Any] = {"rss_added_mb": round(memory[name], 1)}
        for kind in versions:
            keys = [k for k in times if k[:2] == (name, kind)]
            per[kind] = figures(keys)
            if clip_set:
                per[kind]["sets"] = {k[2]: figures([k]) for k in keys}
        per["by_length"] = _by_length(by_length[name])
        out[name] = per
    return out


def _by_length(samples: list[tuple[float, float, float]]) -> dict[str, Any]:
    """Decode time and CPU per audio second by clip length (all versions): an engine whose work
    grows with the audio and one with a fixed window compare differently on short and long turns."""
    out: dict[str, Any] = {}
    for lo, hi in LENGTHS:
        band = [(d, t, c) for d, t, c in samples if lo <= d < hi]
        if band:
            out[f"{lo:g}-{hi:g} s"] = {"turns": len(band), "decode": summary([t for _, t, _ in band]),
                                       "cpu_per_audio_s": round(sum(c for *_, c in band) / sum(d for d, *_ in band), 4)}
    return out


def _worst(said: list[tuple[str, str, str]], n: int = 5) -> list[dict[str, Any]]:
    """The clips with the most word errors: clip, edits, reference, what the engine wrote."""
    scored = [(edit_distance(normalize(ref), normalize(hyp)), clip, ref, hyp) for clip, ref, hyp in said]
    scored.sort(key=lambda s: -s[0])
    return [{"clip": c, "edits": e, "ref": r, "hyp": h} for e, c, r, h in scored[:n] if e]


def live(engines: list[str], audio_dir: Path, rounds: int, out_dir: Path,
         runs: list[tuple[int, str]] | tuple[tuple[int, str], ...] = LIVE_RUNS) -> dict[str, Any]:
    from kombain.loadtest.server_proc import ResourceSampler, local_server
    from kombain.loadtest.stt import run_stt

    results: dict[str, list[dict[str, Any]]] = {e: [] for e in engines}
    out_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        servers = {}
        for e in engines:  # all up front: the runs then alternate between them
            env = {"KOMBAIN_STT_MODEL": e, "KOMBAIN_MAX_SESSIONS": "32",
                   "KOMBAIN_COMPONENTS_DISABLED": "text-to-speech,webrtc,audiosocket,sip,wyoming,lane",
                   "KOMBAIN_LANE_WORKERS": "0"}
            servers[e] = stack.enter_context(local_server(env, out_dir / f"server-{e.replace('/', '_')}.log"))
        for r in range(rounds):
            for j, (n, arrivals) in enumerate(runs):
                k = (r + j) % len(engines)
                for e in engines[k:] + engines[:k]:
                    url, pid = servers[e]
                    res = asyncio.run(run_stt(url, n, audio_dir, ResourceSampler(pid), arrivals=arrivals))
                    res.pop("samples", None)
                    res["engine"] = e
                    results[e].append(res)
                    st = res["stages"]
                    print(f"  {e:16s} N={n:<2d} {arrivals:7s} eos_final p50/p95 {st['eos_final']['p50_ms']} / "
                          f"{st['eos_final']['p95_ms']} ms, WER {res['wer']}, "
                          f"{res['turns_final']}/{res['turns_expected']} finals, server {res['server']}")
    return results


def _print_offline(report: dict[str, Any], versions: list[str] | tuple[str, ...] = VERSIONS) -> None:
    print("\n| set | engine | version | WER | decode p50 / p95 | CPU s per audio s | RSS added |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, per in report.items():
        for kind in versions:
            rows = [("all", per[kind])] + sorted(per[kind].get("sets", {}).items())
            for label, v in rows:
                print(f"| {label} | {name} | {kind} | {v['wer']:.3f} | {v['decode']['p50_ms']:.0f} / "
                      f"{v['decode']['p95_ms']:.0f} ms | {v['cpu_per_audio_s']:.3f} | {per['rss_added_mb']:.0f} MB |")
    print("\n| engine | clip length | turns | decode p50 / p95 | CPU s per audio s |")
    print("| --- | --- | --- | --- | --- |")
    for name, per in report.items():
        for band, v in per["by_length"].items():
            print(f"| {name} | {band} | {v['turns']} | {v['decode']['p50_ms']:.0f} / {v['decode']['p95_ms']:.0f} ms "
                  f"| {v['cpu_per_audio_s']:.3f} |")
    for name, per in report.items():
        for kind in versions:
            for w in per[kind]["worst"][:3]:
                print(f"  {name} {kind}: {w['clip']} ({w['edits']} errors): {w['hyp']!r} for {w['ref']!r}")


def _print_live(report: dict[str, list[dict[str, Any]]]) -> None:
    print("\n| engine | callers | eos_final p50 / p95 | word lag p50 / p95 | WER | finals | server CPU mean | RSS max |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, runs in report.items():
        for res in runs:
            st = res["stages"]
            eos, lag = st["eos_final"], st.get("word_lag") or {}
            print(f"| {name} | {res['sessions']} {res['arrivals']} | {eos['p50_ms']} / {eos['p95_ms']} ms | "
                  f"{lag.get('p50_ms')} / {lag.get('p95_ms')} ms | {res['wer']} | "
                  f"{res['turns_final']}/{res['turns_expected']} | {res['server']['cpu_mean_pct']} % | "
                  f"{res['server']['rss_max_mb']} MB |")


def _machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "loadavg_at_start": [round(x, 2) for x in load]}
