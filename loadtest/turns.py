"""`python -m kombain.loadtest turns`: turn-taking on real recorded speech, over real sockets.

The code: loadtest/turn_data.py (the data set), turn_ws.py (the WebSocket session and trials),
turn_lines.py (WebRTC, Twilio and SIP callers), turn_report.py (summaries, tables, plot, sweep).

One realtime WebSocket per mode (sessions run one after another, never concurrently, so load does
not confound latency). The client is a microphone: PCM16 at 24 kHz in 100 ms chunks paced at 1x,
with real (zero) silence whenever it has nothing to say. The data set is built only from the
recorded speech in tests/data/speech (8 clips with transcripts):

  complete   each clip, leading and trailing silence trimmed, then silence (up to 2 s; the mic
             keeps sending silence until the reply comes)
  paused     the same clips with a pause of 400, 800 or 1200 ms inserted at the middle word
             boundary (word times from faster-whisper tiny.en, snapped to the quietest 10 ms
             nearby); clips with fewer than 3 words are skipped. Each repeat rotates the pause
             length per clip, so `--repeats 3` plays every clip with every pause.
  word       a short real word cut from the clips (0.25-0.45 s), ~1 s into a long spoken reply
  noise      a 120/240 ms burst of band-passed white noise or a 200 ms click train at speech
             level (not a voice, so synthetic), ~1 s into a long reply
  interrupt  a whole clip spoken over a long reply, ~1 s into it

`--callers 1 4 8` runs every mode with one caller, then with four, then eight at once (each its own
session or call playing the whole data set, starts staggered); the runs are labelled `MODE xN` and
pooled per mode. A plot of latency (p50 to p95) against the cut-in rate is written beside the JSON,
one point per (transport, mode, callers).

`--transport websocket webrtc twilio sip` says the complete and paused sets over each transport in
turn (loadtest/turn_lines.py: aiortc WebRTC, Twilio Media Streams, a SIP dialog with PCMU RTP); the
word/noise/interrupt sets and the interruption grid stay on the WebSocket. Phone calls cannot set
turn detection per call, so for twilio and sip a server is started per mode with that mode as its
default (KOMBAIN_TURN_DETECTION ...); with `--url` they run once, under the server's own default.
WebRTC and SIP to a server started here run in a loopback-only network namespace (loadtest/netns.py).

Measured per mode (client clock; the mic is paced, so the send time of a chunk is known):
  latency          complete utterances: the last voiced chunk sent -> the first reply audio delta
  cut_in           paused utterances: a reply created before the utterance ended, or the utterance
                   split into two or more turns (committed items)
  false_interrupt  word/noise over a reply: the reply was cancelled (status cancelled, turn_detected)
  held             word/noise that did not cancel: the longest gap in reply audio around the sound
                   (the server holds output at the first voiced frame and resumes after a blip)
  true interrupt   share cancelled; the first voiced chunk sent -> the last reply audio delta
                   received ("heard": the server holds at the first voiced frame) and -> response.done

Long replies are `response.create` with `metadata.kombain_say`; during the word/noise/interrupt
set `create_response` is off, so the interruption itself is not answered (barge-in does not depend
on it) and the next trial starts sooner. The client cancels each answer once its first audio has
arrived (`response.cancel`), so a run takes minutes, not the length of every reply.

An offline section runs the same end-of-turn model (Smart Turn v3.2) on the same audio, as the
server's first check would see it, and reports, per threshold, how many complete utterances pass
at once and how many mid-sentence pauses would be cut into.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from kombain.loadtest.turn_data import (  # noqa: F401 - re-exported: loadtest.turns.* keeps working
    CHUNK,
    CHUNK_MS,
    DEFAULT_GRID,
    EAGERNESS_MAX_MS,
    FRAME,
    MODES,
    PAUSES_MS,
    RATE,
    SETS,
    Clip,
    DataSet,
    Playback,
    Stimulus,
    _max_wait_s,
    _quietest,
    boundary,
    build_dataset,
    complete_stimulus,
    load_clips,
    noise_stimuli,
    paused_stimulus,
    word_stimuli,
)
from kombain.loadtest.turn_lines import LINES, PHONE_LINES, run_line_callers, server_env
from kombain.loadtest.turn_report import (  # noqa: F401
    detail_table,
    heard_table,
    plot,
    semantic_sweep,
    summarize,
    sweep_table,
    table,
)
from kombain.loadtest.turn_ws import (  # noqa: F401
    LONG_REPLY,
    Session,
    reply_trial,
    run_callers,
    run_mode,
    utterance_trial,
)

TRANSPORTS = ("websocket", *LINES)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("turns", help="turn-taking on recorded speech: latency, cut-ins, false and true interruptions")
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES), metavar="MODE",
                   help=f"turn detection settings to run, one session each ({', '.join(MODES)})")
    p.add_argument("--repeats", type=int, default=1, help="passes over the data set per mode (pause lengths rotate)")
    p.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS),
                   help="complete and paused run on every --transport; interrupt (words, noise, whole clips over "
                        "a reply) on the WebSocket only")
    p.add_argument("--transport", nargs="+", choices=TRANSPORTS, default=["websocket"],
                   help="transports to run the complete and paused sets over, one after another: websocket "
                        "(session.update per mode), webrtc (aiortc; session in the offer), twilio (Media Streams, "
                        "mu-law 8 kHz) and sip (SIP dialog, PCMU RTP): for twilio and sip a server is started per "
                        "mode with it as the default; webrtc and sip run in a loopback-only network namespace")
    p.add_argument("--grid", nargs="*", default=list(DEFAULT_GRID), metavar="MS:WORDS",
                   help="interruption settings (kombain_interrupt_min_speech_ms:min_words) run on --grid-mode "
                        "with the word/noise/interrupt set (WebSocket); every mode also runs 0:0")
    p.add_argument("--grid-mode", choices=list(MODES), default="semantic_auto", metavar="MODE")
    p.add_argument("--true-interruptions", type=int, default=2, help="whole clips over a reply, per repeat")
    p.add_argument("--callers", type=int, nargs="+", default=[1], metavar="N",
                   help="callers talking at once per mode and transport (each its own session or call, starts "
                        "staggered); e.g. 1 4 8")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="only the first N clips of the data set (a quick smoke run)")
    p.add_argument("--no-sweep", action="store_true", help="skip the offline end-of-turn threshold sweep")
    p.add_argument("--audio", type=Path, default=Path("tests/data/speech"))
    p.add_argument("--url", help="an already running server (default: start one here)")
    p.add_argument("--sip", default="127.0.0.1:5060", help="with --url: the server's SIP listener (KOMBAIN_SIP_LISTEN)")
    p.add_argument("--out", type=Path, default=Path("loadtest/results"))
    return p


def _hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


def _argv() -> list[str]:
    """This command's arguments from `turns` on, as `python -m kombain.loadtest` takes them."""
    args = sys.argv[1:]
    return args if args[:1] == ["turns"] else ["turns", *args]


def _server_mode(url: str) -> tuple[str, dict[str, Any]]:
    """The mode a server's calls get by default (read from a realtime session's `session.created`)."""
    async def read() -> dict[str, Any]:
        s = await Session.open(url)
        try:
            _, e = await s.wait(lambda t, e: e["type"] == "session.created", 0, 10)
            td: dict[str, Any] = e["session"]["audio"]["input"]["turn_detection"] or {}
            return td
        finally:
            await s.close()

    td = asyncio.run(read())
    for name, mode in MODES.items():
        if all(td.get(k) == v for k, v in mode.items()):
            return name, mode
    return "server_default", {k: td[k] for k in ("type", "silence_duration_ms", "eagerness") if k in td}


def run(args: argparse.Namespace) -> int:
    from kombain.loadtest import netns
    from kombain.loadtest.server_proc import free_port, local_server

    if args.repeats < 1:
        print("--repeats must be at least 1", file=sys.stderr)
        return 2
    if any(n < 1 or n > 32 for n in args.callers):
        print("--callers must be between 1 and 32", file=sys.stderr)
        return 2
    transports = list(dict.fromkeys(args.transport))
    lines = [t for t in transports if t in LINES]
    if lines and not ({"complete", "paused"} & set(args.sets)):
        print(f"--transport {' '.join(lines)} runs the complete and paused sets only", file=sys.stderr)
        return 2
    # WebRTC (ICE gathers on every interface) and SIP/RTP to a server started here: loopback only.
    if {"webrtc", "sip"} & set(lines) and not args.url and not netns.inside():
        why = netns.permitted()
        if why:
            print(f"--transport webrtc/sip needs a network namespace: {why}", file=sys.stderr)
            return 2
        return netns.reexec_inside(["-m", "kombain.loadtest", *_argv()])
    grid = []
    for g in args.grid:
        ms, _, words = g.partition(":")
        grid.append((int(ms), int(words or 0)))
    t0 = time.monotonic()
    ds = build_dataset(args.audio, limit=args.limit)
    sweep = None if args.no_sweep else semantic_sweep(ds)
    args.out.mkdir(parents=True, exist_ok=True)
    line_sets = tuple(s for s in args.sets if s in ("complete", "paused"))

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f} s] {msg}", flush=True)

    async def work(url: str) -> list[dict[str, Any]]:
        """The WebSocket runs as before (every set, then the grid), then the WebRTC ones."""
        runs = []
        if "websocket" in transports:
            for n in args.callers:
                for name in args.modes:
                    if n == 1:
                        runs.append(await run_mode(url, name, MODES[name], ds, tuple(args.sets), args.repeats, (0, 0),
                                                   args.true_interruptions, log))
                    else:
                        runs.append(await run_callers(url, n, name, ds, tuple(args.sets), args.repeats,
                                                      args.true_interruptions, log))
                    runs[-1].setdefault("transport", "websocket")
            for ext in grid:
                if ext == (0, 0):
                    continue
                runs.append(await run_mode(url, args.grid_mode, MODES[args.grid_mode], ds, ("interrupt",),
                                           args.repeats, ext, args.true_interruptions, log) | {"transport": "websocket"})
        if "webrtc" in transports:
            from kombain.server.transports.webrtc.ice import restrict_host_addresses

            with restrict_host_addresses(("127.0.0.1",)):
                for n in args.callers:
                    for name in args.modes:
                        runs.append(await line_run(url, "webrtc", n, name, MODES[name], ("127.0.0.1", 0)))
        return runs

    async def line_run(url: str, transport: str, n: int, name: str, td: dict[str, Any],
                       sip: tuple[str, int]) -> dict[str, Any]:
        run = await run_line_callers(url, transport, n, name, td, ds, line_sets, args.repeats, sip)
        log(f"  {transport} {run['mode']}: {run['seconds']:.0f} s, load {run['loadavg_1m']}, "
            f"callers' process CPU {run['client']['cpu_mean_pct']} % (max {run['client']['cpu_max_pct']})")
        return run

    async def phone_work(url: str, name: str, td: dict[str, Any], sip: tuple[str, int]) -> list[dict[str, Any]]:
        return [await line_run(url, t, n, name, td, sip) for t in lines if t in PHONE_LINES for n in args.callers]

    runs: list[dict[str, Any]] = []
    server: dict[str, Any] = {}
    phone = [t for t in lines if t in PHONE_LINES]
    shared = [t for t in transports if t not in PHONE_LINES]
    if args.url:
        if shared:
            runs += asyncio.run(work(args.url))
        if phone:
            name, td = _server_mode(args.url)
            log(f"{' and '.join(phone)}: the server's default turn detection, {name} {td}")
            runs += asyncio.run(phone_work(args.url, name, td, _hostport(args.sip)))
        server["metrics"] = _fallbacks(args.url)
    else:
        env = {"KOMBAIN_MAX_SESSIONS": str(max(32, 2 * max(args.callers))), "KOMBAIN_WEBRTC_HOSTS": "127.0.0.1"}
        if shared:
            with local_server(env, args.out / "server.log") as (url, _pid):
                log("server ready")
                runs += asyncio.run(work(url))
                server["metrics"] = _fallbacks(url)
        for name in args.modes if phone else []:
            sip = f"127.0.0.1:{free_port()}"
            with local_server(env | server_env(MODES[name]) | {"KOMBAIN_SIP_LISTEN": sip},
                              args.out / "server.log") as (url, _pid):
                log(f"server ready ({name} as its default, for {' and '.join(phone)})")
                runs += asyncio.run(phone_work(url, name, MODES[name], _hostport(sip)))
                server[f"metrics_{name}"] = _fallbacks(url)
    result = {"test": "turns", "taken": time.strftime("%Y-%m-%d %H:%M:%S"), "repeats": args.repeats,
              "transports": transports, "seconds": round(time.monotonic() - t0, 1), "dataset": ds.describe(),
              "server": server, "runs": runs, "semantic_sweep": sweep}
    ws_runs = [r for r in runs if r.get("transport", "websocket") == "websocket"]
    if ws_runs:
        print()
        print(table(ws_runs))
        print()
        print(detail_table(ws_runs))
    print("\nlatency as heard and cut-ins, per transport, mode and callers:")
    print(heard_table(runs))
    if sweep and "by_threshold" in sweep:
        print("\noffline end-of-turn sweep (Smart Turn + transcript cue, same audio):")
        print(sweep_table(sweep))
    errors = [e for r in runs for e in r["errors"]]
    for e in errors[:10]:
        print(f"error: {e}", file=sys.stderr)
    if any(v.get("kombain_semantic_vad_fallbacks_total") for v in server.values()):
        print("warning: semantic_vad fell back to server_vad (end-of-turn model not loaded)", file=sys.stderr)
    path = args.out / f"turns-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1, default=float))
    png = plot(runs, path.with_suffix(".png"))
    print(f"\nwrote {path}" + (f" and {png}" if png else "") + f" ({result['seconds']:.0f} s)")
    return 0 if not errors else 1


def _fallbacks(url: str) -> dict[str, float]:
    """Counters that say whether semantic_vad really ran (scraped from /metrics; best effort)."""
    try:
        import httpx

        text = httpx.get(url.rstrip("/") + "/metrics", timeout=5).text
    except Exception:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith(("kombain_semantic_vad_fallbacks_total", "kombain_turn_model_load_failures_total",
                            "kombain_turn_model_seconds_count", "kombain_turn_model_seconds_sum")):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kombain.loadtest.turns", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_parser(ap.add_subparsers(dest="test", required=True))
    return run(ap.parse_args(["turns", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
