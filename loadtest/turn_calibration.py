"""`python -m kombain.loadtest turn_calibration`: Smart Turn v3.2 scores at pauses, per kind of
speech, and the end-of-turn schedule (thresholds, wait steps, cap) chosen from them.

The data (issue 20, item 3), all built here from files in the repository:

  read         the 8 recorded clips of tests/data/speech (real people: two CMU ARCTIC sentences read
               aloud, six short spoken commands from the PocketSphinx test data: "go forward ten
               meters", "eight of spades four of clubs seven of hearts"), silence trimmed
  phone_mulaw  the same audio through 8 kHz G.711 mu-law and back (resampled to 8 kHz, encoded,
  phone_alaw   decoded, resampled to 16 kHz: what a Twilio, Asterisk or SIP caller sounds like here)
  synthetic    commands, questions and answers with hesitations ("um, I'd like to, uh, book a table")
               spoken by the bundled Piper voice: synthetic, for plumbing only, reported but never used
               to choose a threshold.

Held-back recorded speech (`--audio tests/data/speech tests/data/speech_heldout`), grouped by file
name (GROUPS; the first pattern that matches wins, so tests/data/speech stays `read`):

  spontaneous   platchat_*: conversational speech, two speakers of a talk show, with hesitations
  read_heldout  librivox_*, librispeech_*, jfk_*, asterisk_*: read book sentences, a speech, phone prompts

Any group + `_mulaw` or `_alaw` is the same audio through 8 kHz G.711 (`phone_mulaw`/`phone_alaw`
are the names `read`'s keep). Several `--scores` files are merged, so each kind can be scored in a
run of its own and chosen from together.

Where the model is asked (what the server's checks would see: 300 ms of lead-in, the turn so far,
then `s` ms of silence, the last 8 s):

  end   the true end of each utterance, at every silence `s` of SILENCES_MS;
  mid   every interior word boundary (faster-whisper tiny.en word times, snapped to the quietest
        10 ms within 60 ms, as `turns` does): the words before it, then `s` ms of silence. A caller
        who pauses there for 400, 800 or 1200 ms is cut into by any check that ends inside the pause.

The transcript cue is applied as the server applies it (`complete_probability`): the words before
the pause are decoded the way the server's speculative decode does (tiny.en, greedy, 200 ms of tail).

Then every schedule of a grid (threshold with the model alone, threshold once the words are decoded,
step between checks, cap) is played over the scores as the server runs it (streaming/end_of_turn.py
TurnSchedule): checks at 160 ms of silence and every step after; a verdict comes back the model's
measured inference time later; the words are there from `--words-ms` of silence (200 ms of tail the
speculative decode waits for, plus its decode time), before that only the model's word counts. Per
schedule: latency of the ends (the silence at the verdict that ends the turn, or the cap) against the
cut-in rate into mid-sentence pauses of 400, 800 and 1200 ms (one of each per boundary). Printed per
kind and eagerness: the fastest p95 whose cut-in rate is at most a share of server_vad at 500 ms's
(which cuts every pause longer than ~500 ms): low 0.5x, medium (auto) 1x, high 1.2x; and the
schedules the server ships (SCHEDULES). Results: JSON (with every score, so `--scores FILE` chooses
again without the models) and a plot (latency p95 against cut-in rate) in --out; docs/performance.md
records a run and docs/data/turn_calibration.json holds its scores (docs/data/turn_calibration_heldout.json:
the held-back kinds'). Per kind it also prints how well the score tells true ends from pauses (AUC).
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kombain.loadtest.turn_kinds import (  # noqa: F401  (re-exported: tests and callers import them from here)
    CODECS,
    GROUPS,
    HELDOUT_KINDS,
    _kind,
    group_dir,
    group_of,
    group_rows,
    parse_kind,
)

SILENCES_MS = (160, 320, 480, 640, 800, 960, 1200, 1600)
PAUSES_MS = (400, 800, 1200)
LEAD_MS = 300
KINDS = ("read", "phone_mulaw", "phone_alaw", "synthetic")  # scored when --kinds is not given
SPONTANEOUS = [
    "Um, I'd like to book a table for, uh, four people.",
    "What time do you close on Sundays?",
    "Turn off the lights in the kitchen.",
    "Yeah, so, the thing is, my card got declined.",
    "Can you, um, check my balance?",
    "No, not that one, the other one.",
    "I think so, but I'm not sure.",
    "Call my sister.",
]


@dataclass
class Scored:
    clip: str
    where: str  # end | mid
    text: str  # the words before the pause (as decoded)
    raw: list[float]  # model probability at each silence of SILENCES_MS
    cued: list[float]  # with the transcript cue


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("turn_calibration", help="Smart Turn scores at pauses per kind of speech; the schedule from them")
    p.add_argument("--audio", type=Path, nargs="+", default=[Path("tests/data/speech")],
                   help="clip folders (transcripts.tsv); each clip's kind is its file name's group (GROUPS)")
    p.add_argument("--kinds", nargs="+", type=_kind, default=None,
                   help=f"default: {' '.join(KINDS)} (with --scores: every kind in the files); "
                        f"held-back speech: {' '.join(HELDOUT_KINDS)}")
    p.add_argument("--max-cut-in", type=float, default=1.0,
                   help="largest cut-in rate into 400-1200 ms pauses a chosen schedule may have (besides "
                        "its eagerness's share of server_vad 500's)")
    p.add_argument("--out", type=Path, default=Path("loadtest/results"))
    p.add_argument("--words-ms", type=float, default=None,
                   help="silence after which the speculative decode's words are there (default: 200 ms of tail "
                        "+ the decode time measured here)")
    p.add_argument("--scores", type=Path, nargs="+", default=None,
                   help="JSONs this command wrote: choose the schedules again from their scores (no model runs); "
                        "the kinds of several files are merged, with their mean inference times")
    return p


def _phone(x16: np.ndarray, codec: str) -> np.ndarray:
    from kombain.streaming.audio import AudioFormat, decode, encode, resample

    fmt = AudioFormat(codec, 8000)
    x8 = resample(x16, 16000, 8000)
    return resample(decode(encode(x8, fmt), fmt), 8000, 16000).astype(np.float32)


def _synthetic_dir(folder: Path) -> Path:
    """The spontaneous-style sentences spoken by the bundled Piper voice, as a clip folder."""
    import asyncio

    import soundfile

    from kombain.streaming.tts import VoicePool

    pool = VoicePool.load(workers=1)
    try:
        rows = ["file\ttext"]
        for i, text in enumerate(SPONTANEOUS):
            pcm = asyncio.run(pool.synthesize(text, rate=16000))
            name = f"synthetic_{i:02d}.wav"
            soundfile.write(folder / name, np.frombuffer(pcm, "<i2"), 16000, subtype="PCM_16")
            rows.append(f"{name}\t{text.lower()}")
        (folder / "transcripts.tsv").write_text("\n".join(rows) + "\n")
    finally:
        pool.close()
    return folder


def _clips(audio_dir: Path, log: Any) -> list[tuple[str, np.ndarray, list[tuple[str, int]]]]:
    """(name, 16 kHz trimmed audio, [(words before boundary, boundary sample)]) per clip; the end is
    len(audio) with every word."""
    from kombain.loadtest.turns import RATE, _quietest, load_clips
    from kombain.streaming.audio import resample

    out = []
    for c in load_clips(audio_dir, log):
        a16 = resample(c.audio, RATE, 16000)
        bounds = []
        for k in range(1, len(c.words)):
            t = (c.words[k - 1][2] + c.words[k][1]) / 2
            cut = _quietest(c.audio, int(t * RATE), RATE * 60 // 1000) * 16000 // RATE
            if 16000 * 0.25 < cut < len(a16) - 16000 * 0.15:  # a real prefix, and speech after it
                bounds.append((" ".join(w for w, _, _ in c.words[:k]), cut))
        out.append((c.name, a16, bounds))
    return out


def score_kind(kind: str, clips: list[tuple[str, np.ndarray, list[tuple[str, int]]]], model: Any, whisper: Any,
               times: list[float], decodes: list[float]) -> list[Scored]:
    from kombain.streaming.end_of_turn import complete_probability
    from kombain.streaming.smart_turn import WINDOW_SAMPLES

    lead = np.zeros(16000 * LEAD_MS // 1000, np.float32)
    rows: list[Scored] = []
    for name, audio, bounds in clips:
        codec = parse_kind(kind)[1]
        a = _phone(audio, codec) if codec else audio
        points = [("end", len(a))] + [("mid", cut) for _, cut in bounds]
        for where, cut in points:
            speech = np.concatenate([lead, a[:cut]])
            tail = np.zeros(16000 * 200 // 1000, np.float32)
            t0 = time.perf_counter()
            segments, _ = whisper.transcribe(np.concatenate([speech, tail]), beam_size=1, temperature=0,
                                             without_timestamps=True, condition_on_previous_text=False)
            text = "".join(s.text for s in segments).strip()
            decodes.append(time.perf_counter() - t0)
            raw = []
            for ms in SILENCES_MS:
                x = np.concatenate([speech, np.zeros(16000 * ms // 1000, np.float32)])[-WINDOW_SAMPLES:]
                t0 = time.perf_counter()
                raw.append(model.predict(x))
                times.append(time.perf_counter() - t0)
            rows.append(Scored(name, where, text, [round(p, 4) for p in raw],
                               [round(complete_probability(p, text), 4) for p in raw]))
    return rows


# --- schedules -----------------------------------------------------------------------------------


def evaluate(rows: list[Scored], alone: float, with_words: float, step_ms: int, cap_ms: int, infer_ms: float,
             words_ms: float = 400.0) -> dict[str, Any]:
    """Play one schedule over the scores: checks at 160 ms of silence and then every `step_ms`; a
    check ends the turn at `alone` before the words are decoded (`words_ms` of silence: the
    speculative decode waits for 200 ms of tail, then decodes) and at `with_words` after (with
    the transcript cue); the turn ends at `cap_ms` whatever the verdicts."""
    from kombain.streaming.end_of_turn import TurnSchedule

    sched = TurnSchedule(first_ms=SILENCES_MS[0], alone=alone, with_words=with_words, step_ms=step_ms,
                         cap_ms=cap_ms)

    def ends_at(r: Scored) -> float:
        """Silence (ms) at which this schedule ends the turn at this pause."""
        unrefined: tuple[int, float] | None = None  # the last verdict taken without words: (index, when back)
        for ms in sched.checks():
            back = ms + infer_ms  # the verdict comes back inference time later
            if unrefined is not None and words_ms <= back:  # the words came in meanwhile: they refine it
                i, was_back = unrefined
                if r.cued[i] >= sched.with_words:
                    return min(float(sched.cap_ms), max(words_ms, was_back))
                unrefined = None
            have_words = back >= words_ms
            i = max(i for i, s in enumerate(SILENCES_MS) if s <= ms)  # the nearest scored silence at or below
            if (r.cued if have_words else r.raw)[i] >= sched.threshold(have_words):
                return min(float(sched.cap_ms), back)
            unrefined = None if have_words else (i, back)
        return float(sched.cap_ms)

    ends = [ends_at(r) for r in rows if r.where == "end"]
    mids = [ends_at(r) for r in rows if r.where == "mid"]
    cut = {p: sum(e < p for e in mids) for p in PAUSES_MS}
    n = len(mids) * len(PAUSES_MS)
    return {"alone": alone, "with_words": with_words, "step_ms": step_ms, "cap_ms": cap_ms,
            "end_p50_ms": round(float(np.percentile(ends, 50)), 1), "end_p95_ms": round(float(np.percentile(ends, 95)), 1),
            "ends_at_first_check": round(sum(e <= SILENCES_MS[0] + infer_ms for e in ends) / len(ends), 3),
            "cut_in": round(sum(cut.values()) / n, 3) if n else 0.0,
            "cut_in_by_pause": {str(p): round(cut[p] / len(mids), 3) for p in PAUSES_MS} if mids else {}}


def server_vad(rows: list[Scored], silence_ms: int = 500, hangover_ms: int = 30) -> dict[str, Any]:
    """server_vad at `silence_ms`: every end waits the silence; a pause longer than it is cut into."""
    mids = [r for r in rows if r.where == "mid"]
    cut = {p: len(mids) if p > silence_ms + hangover_ms else 0 for p in PAUSES_MS}
    n = len(mids) * len(PAUSES_MS)
    return {"silence_ms": silence_ms, "end_p50_ms": silence_ms + hangover_ms, "end_p95_ms": silence_ms + hangover_ms,
            "cut_in": round(sum(cut.values()) / n, 3) if n else 0.0}


# The cut-in each eagerness may trade for speed, as a share of server_vad at 500 ms's (the issue's
# bar for the default: no more often than that; auto = medium), and its longest wait (OpenAI's).
EAGERNESS_CUT_IN = {"low": 0.5, "medium": 1.0, "high": 1.2}
EAGERNESS_CAP_MS = {"low": 8000, "medium": 4000, "high": 2000}
ALONE = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.985, 0.99, 1.0)
WITH_WORDS = (0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)


def search(rows: list[Scored], infer_ms: float, words_ms: float, share: float = 1.0, max_cap_ms: int = 4000,
           max_cut_in: float = 1.0) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Every schedule of the grid, and the one with the lowest end p95 whose cut-in rate is at most
    `share` x server_vad 500's (and `max_cut_in`); ties to the lower cut-in, then the longer cap."""
    grid = itertools.product(ALONE, WITH_WORDS, (160, 320, 480), (800, 1200, 1600, 2000, 4000, 8000))
    results = [evaluate(rows, a, w, st, cap, infer_ms, words_ms) for a, w, st, cap in grid
               if w <= a and cap <= max_cap_ms]
    limit = min(max_cut_in, server_vad(rows)["cut_in"] * share)
    ok = [r for r in results if r["cut_in"] <= limit]
    best = min(ok, key=lambda r: (r["end_p95_ms"], r["cut_in"], r["end_p50_ms"], -r["cap_ms"])) if ok else None
    return results, best


def _frontier(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Schedules no other beats on both p95 and cut-in."""
    out = []
    for r in sorted(results, key=lambda r: (r["cut_in"], r["end_p95_ms"])):
        if not out or r["end_p95_ms"] < out[-1]["end_p95_ms"]:
            out.append(r)
    return out


def _plot(report: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 5))
    for kind, k in report["kinds"].items():
        f = k["frontier"]
        (line,) = ax.plot([r["cut_in"] * 100 for r in f], [r["end_p95_ms"] for r in f], marker="o", label=kind)
        if k.get("chosen"):
            ax.scatter([k["chosen"]["cut_in"] * 100], [k["chosen"]["end_p95_ms"]], s=160, facecolors="none",
                       edgecolors=line.get_color())
        for name, r in k.get("shipped", {}).items():
            if name.startswith("medium/"):  # the default (auto) as shipped
                ax.scatter([r["cut_in"] * 100], [r["end_p95_ms"]], marker="*", s=200, color=line.get_color())
        sv = k["server_vad"]
        ax.scatter([sv[s]["cut_in"] * 100 for s in sv], [sv[s]["end_p95_ms"] for s in sv], marker="x",
                   color=line.get_color())
    ax.set_xlabel("cut-in rate into 400-1200 ms mid-sentence pauses (%)")
    ax.set_ylabel("end of speech -> turn ended, p95 (ms; model offline)")
    ax.set_title("Smart Turn v3.2 schedules: lines best trade-offs, o search optimum,\n"
                 "* shipped default (auto), x server_vad 200/500/800 ms", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    if args.scores:  # choose again from scores already taken (no model runs)
        scored, inference = merge_scores([json.loads(f.read_text()) for f in args.scores], args.kinds)
    else:
        scored, inference = _score_all(args)
    words_ms = args.words_ms if args.words_ms is not None else 200 + inference.get("decode_p50", 200.0)
    report = analyse(scored, inference, args.max_cut_in, words_ms)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = args.out / f"turn_calibration-{stamp}.json"
    path.write_text(json.dumps(report, indent=1))
    png = _plot(report, args.out / f"turn_calibration-{stamp}.png")
    print(f"\nwrote {path}" + (f" and {png}" if png else "") + f" in {time.monotonic() - t0:.0f} s")
    return 0


def merge_scores(reports: list[dict[str, Any]], kinds: list[str] | None) -> tuple[dict[str, list[Scored]],
                                                                                  dict[str, float]]:
    """The scores of `kinds` (all when None) from reports this command wrote (a later report's kind
    replaces an earlier one's), and their mean inference times."""
    scored: dict[str, list[Scored]] = {}
    for rep in reports:
        for kind, k in rep["kinds"].items():
            if kinds is None or kind in kinds:
                scored[kind] = [Scored(**r) for r in k["scores"]]
    missing = [k for k in kinds or [] if k not in scored]
    if missing:
        raise SystemExit(f"turn_calibration: no scores of {missing} in the --scores files")
    keys = set.intersection(*(set(r["model_inference_ms"]) for r in reports))
    inference = {key: round(float(np.mean([r["model_inference_ms"][key] for r in reports])), 1) for key in sorted(keys)}
    return scored, inference


def _score_all(args: argparse.Namespace) -> tuple[dict[str, list[Scored]], dict[str, float]]:
    from faster_whisper import WhisperModel

    from kombain.streaming.models import resolve_stt_model
    from kombain.streaming.smart_turn import SmartTurnModel

    kinds = args.kinds or list(KINDS)
    model = SmartTurnModel.load(None, threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        whisper = WhisperModel(str(resolve_stt_model("tiny.en", Path(tmp))), device="cpu", compute_type="int8")
        clips = {}
        for group in dict.fromkeys(parse_kind(k)[0] for k in kinds):
            folder = (_synthetic_dir(Path(tmp)) if group == "synthetic"
                      else group_dir(args.audio, group, Path(tmp) / f"clips_{group}"))
            clips[group] = _clips(folder, print)
            if not clips[group]:
                raise SystemExit(f"turn_calibration: no clips of {group} in {[str(d) for d in args.audio]}")
        times: list[float] = []
        decodes: list[float] = []
        scored = {}
        for kind in kinds:
            t0 = time.monotonic()
            scored[kind] = score_kind(kind, clips[parse_kind(kind)[0]], model, whisper, times, decodes)
            print(f"{kind}: {len(scored[kind])} pauses scored in {time.monotonic() - t0:.0f} s")
    return scored, {"p50": round(float(np.percentile(times, 50)) * 1000, 1),
                    "p95": round(float(np.percentile(times, 95)) * 1000, 1),
                    "decode_p50": round(float(np.percentile(decodes, 50)) * 1000, 1)}


def analyse(scored: dict[str, list[Scored]], inference: dict[str, float], max_cut_in: float,
            words_ms: float) -> dict[str, Any]:
    from kombain.streaming.end_of_turn import SCHEDULES, THRESHOLDS

    infer_ms = inference["p50"]
    report: dict[str, Any] = {
        "silences_ms": list(SILENCES_MS), "pauses_ms": list(PAUSES_MS), "lead_ms": LEAD_MS,
        "model_inference_ms": inference, "words_after_ms": words_ms, "server_thresholds_then": THRESHOLDS,
        "kinds": {},
    }
    print(f"\nSmart Turn inference p50 {infer_ms:.0f} ms (p95 {inference['p95']:.0f})")
    for kind, rows in scored.items():
        results, best = search(rows, infer_ms, words_ms, EAGERNESS_CUT_IN["medium"], EAGERNESS_CAP_MS["medium"],
                               max_cut_in)
        by_eagerness = {e: search(rows, infer_ms, words_ms, share, EAGERNESS_CAP_MS[e], max_cut_in)[1]
                        for e, share in EAGERNESS_CUT_IN.items()}
        shipped = {f"{e}/{kind_group}": evaluate(rows, sc.alone, sc.with_words, sc.step_ms, sc.cap_ms, infer_ms, words_ms)
                   for (e, kind_group), sc in SCHEDULES.items()
                   if kind_group == ("phone" if parse_kind(kind)[1] else "wideband")}
        ends = [r for r in rows if r.where == "end"]
        mids = [r for r in rows if r.where == "mid"]
        k = report["kinds"][kind] = {
            "utterances": len(ends), "mid_boundaries": len(mids),
            "p_end": {str(ms): _dist([r.cued[i] for r in ends]) for i, ms in enumerate(SILENCES_MS)},
            "p_mid": {str(ms): _dist([r.cued[i] for r in mids]) for i, ms in enumerate(SILENCES_MS)},
            "p_end_raw": {str(ms): _dist([r.raw[i] for r in ends]) for i, ms in enumerate(SILENCES_MS)},
            "p_mid_raw": {str(ms): _dist([r.raw[i] for r in mids]) for i, ms in enumerate(SILENCES_MS)},
            "auc_raw": {str(ms): separation(ends, mids, i, cued=False) for i, ms in enumerate(SILENCES_MS)},
            "auc": {str(ms): separation(ends, mids, i) for i, ms in enumerate(SILENCES_MS)},
            "server_vad": {str(s): server_vad(rows, s) for s in (200, 500, 800)},
            "before": _before(rows, infer_ms, words_ms),
            "frontier": _frontier(results), "chosen": best, "by_eagerness": by_eagerness, "shipped": shipped,
            "scores": [r.__dict__ for r in rows],
        }
        print(f"\n== {kind}: {len(ends)} utterances, {len(mids)} mid-sentence word boundaries")
        print("   silence ms            " + " ".join(f"{ms:>6d}" for ms in SILENCES_MS))
        for label, key in (("end p median (raw)", "p_end_raw"), ("mid p median (raw)", "p_mid_raw"),
                           ("end p median (cue)", "p_end"), ("mid p median (cue)", "p_mid")):
            print(f"   {label:22s}" + " ".join(f"{k[key][str(ms)]['p50']:6.2f}" for ms in SILENCES_MS))
        for label, key in (("end >= 0.5 (raw)", "p_end_raw"), ("mid >= 0.5 (raw)", "p_mid_raw")):
            print(f"   {label:22s}" + " ".join(f"{k[key][str(ms)]['over_0.5']:6.2f}" for ms in SILENCES_MS))
        for label, key in (("AUC end vs mid (raw)", "auc_raw"), ("AUC end vs mid (cue)", "auc")):
            print(f"   {label:22s}" + " ".join(f"{k[key][str(ms)]:6.2f}" for ms in SILENCES_MS))
        b = k["before"]
        print(f"   before (0.5 once words are in, <= 1 s wait for them; recheck 400 ms, cap 4000): end p50/p95 "
              f"{b['end_p50_ms']}/{b['end_p95_ms']} ms, cut-in {b['cut_in']:.2f} {b['cut_in_by_pause']}")
        print(f"   server_vad 500: end {k['server_vad']['500']['end_p95_ms']} ms, cut-in "
              f"{k['server_vad']['500']['cut_in']:.2f}")
        for label, r in [("chosen", best), *by_eagerness.items(), *shipped.items()]:
            if r:
                print(f"   {label:7s} alone {r['alone']}, with words {r['with_words']}, step {r['step_ms']} ms, cap "
                      f"{r['cap_ms']} ms: end p50/p95 {r['end_p50_ms']}/{r['end_p95_ms']} ms, "
                      f"{r['ends_at_first_check']:.0%} at the first check, cut-in {r['cut_in']:.2f} "
                      f"{r['cut_in_by_pause']}")
            else:
                print(f"   {label:7s} none within its cut-in limit")
    return report


def _before(rows: list[Scored], infer_ms: float, words_ms: float) -> dict[str, Any]:
    """semantic_vad auto as it was: each check waited (up to 1 s) for the words, then needed 0.5;
    rechecks every 400 ms, 4 s cap."""
    r = evaluate(rows, 0.5, 0.5, 400, 4000, infer_ms, words_ms=0.0)
    wait = max(0.0, words_ms - SILENCES_MS[0] - infer_ms)  # the first verdict held for the words
    for key in ("end_p50_ms", "end_p95_ms"):
        r[key] = round(min(4000.0, r[key] + wait), 1)
    return r


def separation(ends: list[Scored], mids: list[Scored], i: int, cued: bool = True) -> float:
    """How well the score at SILENCES_MS[i] tells true ends from mid-sentence pauses: the chance that
    a random end scores above a random pause (ties count half; 0.5 is a coin, 1.0 separates all)."""
    e = [(r.cued if cued else r.raw)[i] for r in ends]
    m = [(r.cued if cued else r.raw)[i] for r in mids]
    if not e or not m:
        return 0.5
    wins = sum((p > q) + 0.5 * (p == q) for p in e for q in m)
    return round(wins / (len(e) * len(m)), 3)


def _dist(ps: list[float]) -> dict[str, float]:
    a = np.asarray(ps) if ps else np.zeros(1)
    return {"n": len(ps), "p10": round(float(np.percentile(a, 10)), 3), "p50": round(float(np.percentile(a, 50)), 3),
            "p90": round(float(np.percentile(a, 90)), 3), "over_0.5": round(float(np.mean(a >= 0.5)), 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kombain.loadtest.turn_calibration")
    sub = ap.add_subparsers(dest="test", required=True)
    add_parser(sub)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:] if len(sys.argv) > 1 and sys.argv[1] == "turn_calibration"
                  else ["turn_calibration", *sys.argv[1:]]))
