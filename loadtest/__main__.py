"""Load tests: `python -m loadtest stt --sessions N --audio DIR [--url URL]`,
`python -m loadtest conversation --transport websocket|webrtc|twilio|asterisk|sip|audiosocket --sessions 1 4 16`."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
import time
from pathlib import Path

from kombain.loadtest.server_proc import ResourceSampler, local_server
from kombain.loadtest.stats import fmt_row

PBX = ("sip", "audiosocket")
# Benchmarks with their own options: subcommand -> module with add_parser(sub) and run(args).
_COMMANDS = {
    "turns": "turns",  # turn-taking on recorded speech
    "scaleout": "scaleout",  # a small cluster in network namespaces
    "words": "word_align",  # REST word times against an energy reference
    "wyoming": "wyoming_bench",  # against wyoming-faster-whisper and wyoming-piper
    "engines": "engines",  # speech engines side by side
    "turn_calibration": "turn_calibration",  # Smart Turn at pauses, per kind of speech
    "soak": "soak",  # live callers beside hostile clients, memory before/peak/after
}
PHONE = ("twilio", "asterisk", *PBX)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__)
    sub = ap.add_subparsers(dest="test", required=True)
    commands = {name: importlib.import_module(f"kombain.loadtest.{module}") for name, module in _COMMANDS.items()}
    for command in commands.values():
        command.add_parser(sub)
    stt = sub.add_parser("stt", help="concurrent streaming speech-to-text callers")
    stt.add_argument("--sessions", type=int, nargs="+", default=[1], help="one or more N to run in turn")
    stt.add_argument("--audio", type=Path, default=Path("tests/data/speech"))
    stt.add_argument("--arrivals", choices=("stagger", "burst", "poisson"), default="stagger",
                     help="callers start over 1 s (stagger), all at once (burst: every turn ends together), "
                          "or with exponential gaps (poisson, --mean-gap)")
    stt.add_argument("--mean-gap", type=float, default=1.0, help="poisson: mean seconds between caller starts")
    stt.add_argument("--no-words", action="store_true",
                     help="skip the word measures (word lag, shown early, rewrites; needs an offline decode)")
    stt.add_argument("--find-capacity", nargs="?", type=float, const=1.0, default=None, metavar="SECONDS",
                     help="report the largest N run whose end of speech -> final (`eos_final`) p95 is under "
                          "SECONDS (default 1.0) with every turn finalised")
    conv = sub.add_parser("conversation", help="concurrent callers talking to the bot, with barge-in")
    conv.add_argument("--sessions", type=int, nargs="+", default=[1])
    conv.add_argument("--audio", type=Path, default=Path("tests/data/speech"))
    conv.add_argument("--interrupt-every", type=int, default=None,
                      help="interrupt every k-th reply (0: never; default 3, or 2 for twilio/asterisk)")
    conv.add_argument("--rounds", type=int, default=1, help="times each caller goes through the clips")
    conv.add_argument("--transport", choices=("websocket", "webrtc", *PHONE), default="websocket",
                      help="webrtc: calls over aiortc, run in a loopback-only network namespace (unshare -n); "
                           "twilio/asterisk: phone calls over /v1/telephony/* (3 x --rounds turns per call); "
                           "sip: SIP/RTP calls; audiosocket: Asterisk AudioSocket calls over TCP")
    conv.add_argument("--loss", type=float, default=0.0,
                      help="sip: fraction of the callers' RTP packets dropped (seeded, as netem would)")
    conv.add_argument("--jitter-ms", type=float, default=0.0,
                      help="sip: each caller RTP packet delayed by uniform 0..MS (packets may reorder)")
    conv.add_argument("--sip", default="127.0.0.1:5060",
                      help="with --url: the server's SIP listener (KOMBAIN_SIP_LISTEN)")
    conv.add_argument("--audiosocket", default="127.0.0.1:9092",
                      help="with --url: the server's AudioSocket listener (KOMBAIN_AUDIOSOCKET_LISTEN)")
    conv.add_argument("--find-capacity", nargs="?", type=float, const=1.0, default=None, metavar="SECONDS",
                      help="report the largest N run whose `turn` p95 is under SECONDS (default 1.0) "
                           "with every call completed")
    for p in (stt, conv):
        p.add_argument("--url", help="an already running server (default: start one here)")
        p.add_argument("--out", type=Path, default=Path("loadtest/results"))
        p.add_argument("--model", default=None, help="KOMBAIN_STT_MODEL for a server started here")
        p.add_argument("--lane", choices=("idle", "saturated", "both"), default="idle",
                       help="image lane during the run (a server started here): idle, kept busy, or both in turn")
    args = ap.parse_args(argv)
    if args.test in commands:
        return int(commands[args.test].run(args))
    if args.test == "conversation" and args.interrupt_every is None:
        args.interrupt_every = 2 if args.transport in PHONE else 3
    if args.test == "conversation" and (args.loss or args.jitter_ms) and args.transport != "sip":
        ap.error("--loss and --jitter-ms apply to --transport sip only")
    if args.test == "conversation" and not 0 <= args.loss < 1:
        ap.error("--loss is a fraction in [0, 1)")
    transport = getattr(args, "transport", "websocket")
    # WebRTC (ICE gathers on every interface) and SIP/RTP calls to a server started here run in a
    # loopback-only network namespace: a load test sends to nothing but this machine.
    if (transport == "webrtc" or (transport in PBX and not args.url)) and not os.environ.get("KOMBAIN_NETNS_INNER"):
        return _in_namespace(sys.argv[1:] if argv is None else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = []
    lanes = ("idle", "saturated") if args.lane == "both" else (args.lane,)
    if args.url and args.lane != "idle":
        ap.error("--lane needs a server started here (no --url)")
    for n in args.sessions:
        if n < 1 or n > 64:
            ap.error("--sessions must be between 1 and 64")
        for lane in lanes:
            runs.append(_one(args, n, lane))
            _print(runs[-1])
        if len(lanes) == 2:
            _print_ratio(runs[-2], runs[-1])
    if getattr(args, "find_capacity", None) is not None:
        _print_capacity(runs, args.find_capacity)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = args.test + (f"-{args.transport}" if getattr(args, "transport", "") in PHONE else "")
    if args.test == "stt" and args.arrivals != "stagger":
        name += f"-{args.arrivals}"
    if getattr(args, "loss", 0) or getattr(args, "jitter_ms", 0):
        name += f"-loss{args.loss:g}-jitter{args.jitter_ms:g}ms"
    path = args.out / f"{name}-{stamp}.json"
    path.write_text(json.dumps(runs, indent=1))
    png = _plot(runs, args.out / f"{name}-{stamp}.png")
    print(f"\nwrote {path}" + (f" and {png}" if png else ""))
    return 0 if all(not r["errors"] for r in runs) else 1


def _one(args: argparse.Namespace, n: int, lane: str = "idle") -> dict:
    from kombain.loadtest.conversation import run_conversation
    from kombain.loadtest.stt import run_stt

    def work(url: str, sampler: ResourceSampler | None = None):  # type: ignore[no-untyped-def]
        if args.test == "conversation" and args.transport in PBX:
            from kombain.loadtest.conversation_pbx import run_conversation_pbx

            return run_conversation_pbx(url, args.transport, n, args.audio, args.interrupt_every, args.rounds,
                                        sampler, sip=_hostport(args.sip), audiosocket=_hostport(args.audiosocket),
                                        loss=args.loss, jitter_ms=args.jitter_ms)
        if args.test == "conversation" and args.transport in PHONE:
            from kombain.loadtest.conversation_phone import run_conversation_phone

            return run_conversation_phone(url, args.transport, n, args.audio, args.interrupt_every, args.rounds,
                                          sampler)
        if args.test == "conversation" and args.transport == "webrtc":
            from kombain.loadtest.conversation_webrtc import run_conversation_webrtc

            return run_conversation_webrtc(url, n, args.audio, args.interrupt_every, sampler)
        if args.test == "conversation":
            return run_conversation(url, n, args.audio, args.interrupt_every, args.rounds, sampler)
        return run_stt(url, n, args.audio, sampler, arrivals=args.arrivals, mean_gap_s=args.mean_gap,
                       words=not args.no_words)

    if args.url:
        return asyncio.run(work(args.url)) | {"lane": "idle"}
    env = {"KOMBAIN_MAX_SESSIONS": str(max(n, 32))}
    if getattr(args, "transport", "") == "webrtc":
        env["KOMBAIN_WEBRTC_HOSTS"] = "127.0.0.1"
    if getattr(args, "transport", "") in PBX:  # listeners on free ports the callers are told of
        from kombain.loadtest.server_proc import free_port

        args.sip, args.audiosocket = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        env |= {"KOMBAIN_SIP_LISTEN": args.sip, "KOMBAIN_AUDIOSOCKET_LISTEN": args.audiosocket}
    if args.model:
        env["KOMBAIN_STT_MODEL"] = args.model
    if lane == "idle":
        with local_server(env, args.out / "server.log") as (url, pid):
            result = asyncio.run(work(url, ResourceSampler(pid)))
    else:
        from kombain.loadtest.lane_load import lane_env, saturate

        async def busy(url: str, pid: int) -> dict:
            load = asyncio.create_task(saturate(url))
            await asyncio.sleep(5)  # let the first job reach its denoising loop
            try:
                return await work(url, ResourceSampler(pid))
            finally:
                load.cancel()

        with lane_env() as lenv, local_server(env | lenv, args.out / "server.log") as (url, pid):
            result = asyncio.run(busy(url, pid))
    result["lane"] = lane
    return result


def _hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


def _in_namespace(argv: list[str]) -> int:
    """Re-run this command in a new network namespace with only loopback up."""
    import shlex
    import subprocess

    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        print("--transport webrtc/sip/audiosocket needs `unshare -n` (root or user namespaces)", file=sys.stderr)
        return 2
    cmd = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "loadtest", *argv])
    env = {**os.environ, "KOMBAIN_NETNS_INNER": "1"}
    return subprocess.run(["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {cmd}"], env=env).returncode


def _print_capacity(runs: list[dict], limit_s: float) -> None:
    """The largest N among those run whose `turn` p95 is under the limit, every call completed
    (phone calls: none failed, closed early or timed out, every turn answered; others: no errors)."""
    ok: list[int] = []
    over: list[int] = []
    stage = "eos_final" if runs and "turns_final" in runs[0] else "turn"
    for run in runs:
        p95 = run["stages"].get(stage, {}).get("p95_ms")
        if run.get("transport") in PHONE:
            calls = run["responses"]
            complete = calls["completed"] == run["sessions"] and not calls["no_reply"]
        elif "turns_final" in run:  # speech to text: every turn finalised
            complete = not run["errors"] and run["turns_final"] >= run["turns_expected"]
        else:
            complete = not run["errors"]
        (ok if p95 is not None and p95 < limit_s * 1000 and complete else over).append(run["sessions"])
    if not ok:
        print(f"\ncapacity: none of N={sorted(set(over))} has `{stage}` p95 < {limit_s:.2f} s")
        return
    best = max(ok)
    above = sorted(n for n in set(over) if n > best)
    bracket = f" (N={above[0]} is over)" if above else " (the largest N run: not bracketed from above)"
    print(f"\ncapacity: N={best} callers with `{stage}` p95 < {limit_s:.2f} s{bracket}")


def _print_ratio(idle: dict, busy: dict) -> None:
    print(f"-- lane saturated / idle, p95 ({idle['sessions']} session(s)):")
    for stage in idle["stages"]:
        a, b = idle["stages"][stage]["p95_ms"], busy["stages"][stage]["p95_ms"]
        if a and b:
            print(f"   {stage:16s} {b:7.1f} / {a:7.1f} ms = {b / a:.2f}x")


def _print(run: dict) -> None:
    lane = f", lane {run['lane']}" if run.get("lane") != "idle" else ""
    if "turns_final" in run:
        print(f"\n== {run['sessions']} session(s), {run.get('arrivals', 'stagger')}{lane}: "
              f"{run['turns_final']}/{run['turns_expected']} turns finalised, WER {run['wer']}")
        if run.get("words"):
            w = run["words"]
            print(f"words: {w['final_words']} final, shown early {w['shown_early']}, final rewrote shown words in "
                  f"{w['rewrites']}/{w['turns_with_partials']} turns with partials ({w['rewrite_rate']})")
            for shown, final in w["rewrite_examples"][:3]:
                print(f"   shown {shown!r} -> final {final!r}")
    else:
        transport = {"webrtc": " over WebRTC", "twilio": " over Twilio Media Streams",
                     "asterisk": " over Asterisk chan_websocket", "sip": " over SIP/RTP",
                     "audiosocket": " over Asterisk AudioSocket"}.get(run.get("transport", ""), "")
        print(f"\n== {run['sessions']} session(s){transport}{lane}: responses {run['responses']}")
    for name, s in run["stages"].items():
        print(fmt_row(name, s))
    for name, s in (run.get("server_stages") or {}).items():  # estimated from /metrics histogram buckets
        if s["count"]:
            top = f"  ({s['above_top_bucket']} above the top bucket)" if s.get("above_top_bucket") else ""
            print(f"{name:18s} n={s['count']:<4d} p50 ~{s['p50_ms']:6.1f} ms  p95 ~{s['p95_ms']:6.1f} ms  "
                  f"p99 ~{s['p99_ms']:6.1f} ms  (bucket estimate){top}")
    if run.get("packets"):
        print(f"packets: {run['packets']}")
    if run.get("server"):
        print(f"server: {run['server']}")
    if run.get("client"):
        print(f"client (the callers' process): {run['client']}")
    if run.get("machine"):
        print(f"machine: {run['machine']}")
    for e in run["errors"][:5]:
        print(f"error: {e}", file=sys.stderr)


def _plot(runs: list[dict], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    stages = list(runs[0]["samples"])
    fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 4), squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=True):
        for run in runs:
            xs = sorted(v * 1000 for v in run["samples"][stage])
            if xs:
                ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=f"N={run['sessions']}")
        ax.axvline(200, color="grey", linestyle=":", label="200 ms goal")
        ax.set_title(stage)
        ax.set_xlabel("ms")
        ax.set_ylabel("fraction of samples")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


if __name__ == "__main__":
    sys.exit(main())
