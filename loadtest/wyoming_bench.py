"""`python -m kombain.loadtest wyoming`: kombain's Wyoming listener side by side with
wyoming-faster-whisper and wyoming-piper (from PyPI), same model (bundled tiny.en) and voice
(en_US-joe-medium), offline, the servers alternating request by request in one run.

Speech to text: each client connects as Home Assistant does, sends `transcribe`, then a clip at
real time in 1024-sample chunks followed by the trailing silence its VAD waits for (0.7 s at
Home Assistant's default sensitivity), then `audio-stop`; measured: audio-stop -> `transcript`.
Text to speech: `synthesize` -> the first `audio-chunk`. At 1 and N simultaneous clients, with
p50/p95 and the WER of each server's transcripts against the clips' references.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kombain.loadtest.server_proc import free_port, local_server
from kombain.loadtest.stats import summary
from kombain.loadtest.wer import wer

# Answers of a home assistant, each request's its own: a repeated phrase could be served from a
# cache of rendered clauses rather than synthesised, which is not what this measures.
_TEMPLATES = [
    "The {room} lights are on now.",
    "It is {n} degrees in the {room}, and the heating is off.",
    "Okay, the {room} timer is set for {n} minutes.",
    "Sure, the {room} door is locked. Anything else?",
]
_ROOMS = ["kitchen", "living room", "bedroom", "hallway", "garage", "office", "bathroom", "attic", "basement",
          "porch", "nursery", "study"]


def answer(k: int) -> str:
    """The k-th text to speak; no two of the first 48 start with the same words."""
    return _TEMPLATES[k % len(_TEMPLATES)].format(room=_ROOMS[(k // len(_TEMPLATES)) % len(_ROOMS)], n=10 + k)

CHUNK_SAMPLES = 1024
VOICE = "en_US-joe-medium"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("wyoming", help="Wyoming: kombain against wyoming-faster-whisper and wyoming-piper")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8], help="simultaneous clients, each N in turn")
    p.add_argument("--rounds", type=int, default=2, help="rounds of N simultaneous requests (N > 1)")
    p.add_argument("--audio", type=Path, default=Path("tests/data/speech"))
    p.add_argument("--trailing-silence", type=float, default=0.7,
                   help="seconds of silence sent after each clip before audio-stop (the client's VAD wait)")
    p.add_argument("--beam", type=int, default=5,
                   help="KOMBAIN_STT_BEAM_SIZE for kombain (5: what wyoming-faster-whisper uses on x86; "
                        "kombain's own default is 1)")
    p.add_argument("--out", type=Path, default=Path("loadtest/results"))


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


# --- servers ------------------------------------------------------------------------------------

@contextlib.contextmanager
def _peer(module: str, *argv: str) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", module, "--uri", f"tcp://127.0.0.1:{port}", *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{module} exited during start-up")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.3)
        else:
            raise RuntimeError(f"{module} did not start")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- clients ------------------------------------------------------------------------------------

def _clips(audio_dir: Path) -> list[tuple[bytes, int, str]]:
    from kombain.clients.realtime_client import read_wav

    rows = (audio_dir / "transcripts.tsv").read_text().strip().splitlines()[1:]
    out = []
    for name, text in (r.split("\t", 1) for r in rows):
        audio, rate = read_wav(audio_dir / name)
        out.append(((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes(), rate, text))
    return out


async def _transcribe(port: int, pcm: bytes, rate: int, silence_s: float) -> tuple[float, str]:
    from wyoming.asr import Transcribe, Transcript
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient

    audio = pcm + bytes(int(rate * silence_s) * 2)
    step = CHUNK_SAMPLES * 2
    async with AsyncTcpClient("127.0.0.1", port) as c:
        await c.write_event(Transcribe(language="en").event())
        await c.write_event(AudioStart(rate=rate, width=2, channels=1).event())
        start = time.monotonic()
        for k, i in enumerate(range(0, len(audio), step)):
            await c.write_event(AudioChunk(rate=rate, width=2, channels=1, audio=audio[i:i + step]).event())
            due = start + (k + 1) * CHUNK_SAMPLES / rate  # as a microphone delivers it
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        t0 = time.monotonic()
        await c.write_event(AudioStop().event())
        while True:
            ev = await asyncio.wait_for(c.read_event(), 60)
            if ev is None:
                raise RuntimeError("connection closed before the transcript")
            if Transcript.is_type(ev.type):
                return time.monotonic() - t0, Transcript.from_event(ev).text


async def _synthesize(port: int, text: str) -> float:
    from wyoming.audio import AudioChunk, AudioStop
    from wyoming.client import AsyncTcpClient
    from wyoming.tts import Synthesize, SynthesizeVoice

    async with AsyncTcpClient("127.0.0.1", port) as c:
        t0 = time.monotonic()
        await c.write_event(Synthesize(text=text, voice=SynthesizeVoice(name=VOICE)).event())
        first = None
        while True:
            ev = await asyncio.wait_for(c.read_event(), 60)
            if ev is None:
                raise RuntimeError("connection closed before the audio ended")
            if first is None and AudioChunk.is_type(ev.type):
                first = time.monotonic() - t0
            if AudioStop.is_type(ev.type):
                assert first is not None
                return first


# --- the run ------------------------------------------------------------------------------------

async def _run(args: argparse.Namespace) -> int:
    from kombain.streaming.models import piper_voice_path, resolve_stt_model

    clips = _clips(args.audio)
    model_dir = resolve_stt_model("tiny.en", Path("/tmp"))
    voice_dir = piper_voice_path(VOICE).parent
    wy_port = free_port()
    env = {"KOMBAIN_WYOMING_LISTEN": f"127.0.0.1:{wy_port}", "KOMBAIN_STT_MODEL": "tiny.en", "KOMBAIN_TTS_VOICE": VOICE,
           "KOMBAIN_STT_BEAM_SIZE": str(args.beam)}
    stt: dict[str, dict[int, list[float]]] = {"kombain": {}, "peer": {}}
    tts: dict[str, dict[int, list[float]]] = {"kombain": {}, "peer": {}}
    pairs: dict[str, list[tuple[str, str]]] = {"kombain": [], "peer": []}
    with local_server(env), \
            _peer("wyoming_faster_whisper", "--model", str(model_dir), "--language", "en", "--local-files-only",
                  "--data-dir", str(args.out / "wyoming-peer")) as fw_port, \
            _peer("wyoming_piper", "--voice", VOICE, "--data-dir", str(voice_dir), "--local-files-only") as piper_port:
        servers = {"kombain": (wy_port, wy_port), "peer": (fw_port, piper_port)}
        spoken = itertools.count()  # texts never repeat within a server
        for sp, tp in servers.values():  # warm both (first loads, first decodes)
            await _transcribe(sp, clips[0][0], clips[0][1], 0.1)
            await _synthesize(tp, "Hello.")
        for n in args.clients:
            batches = len(clips) if n == 1 else args.rounds
            for b in range(batches):
                order = ["kombain", "peer"] if b % 2 == 0 else ["peer", "kombain"]
                for name in order:
                    sp, tp = servers[name]
                    picks = [clips[(b * n + i) % len(clips)] for i in range(n)]
                    results = await asyncio.gather(*(_transcribe(sp, pcm, rate, args.trailing_silence)
                                                     for pcm, rate, _ in picks))
                    stt[name].setdefault(n, []).extend(r[0] for r in results)
                    if n == 1:
                        pairs[name] += [(ref, r[1]) for (_, _, ref), r in zip(picks, results, strict=True)]
                texts = [answer(next(spoken)) for _ in range(n)]  # the same texts for both servers
                for name in order:
                    tts[name].setdefault(n, []).extend(await asyncio.gather(*(_synthesize(servers[name][1], t)
                                                                              for t in texts)))
    report: dict[str, Any] = {"trailing_silence_s": args.trailing_silence, "beam": args.beam, "clients": args.clients,
                              "rows": []}
    print(f"{'measure':34s} {'clients':>7s} {'kombain p50/p95 ms':>20s} {'peer p50/p95 ms':>18s}  ratio p50 / p95")
    for measure, table, peer in (("audio-stop -> transcript", stt, "wyoming-faster-whisper"),
                                 ("synthesize -> first audio", tts, "wyoming-piper")):
        for n in args.clients:
            k, p = summary(table["kombain"][n]), summary(table["peer"][n])
            r50 = k["p50_ms"] / p["p50_ms"] if p["p50_ms"] else None  # type: ignore[operator]
            r95 = k["p95_ms"] / p["p95_ms"] if p["p95_ms"] else None  # type: ignore[operator]
            report["rows"].append({"measure": measure, "peer": peer, "clients": n, "kombain": k, "peer_stats": p,
                                   "ratio_p50": r50, "ratio_p95": r95})
            print(f"{measure:34s} {n:7d} {k['p50_ms']:9.0f} / {k['p95_ms']:<8.0f} {p['p50_ms']:8.0f} / "
                  f"{p['p95_ms']:<8.0f}  {r50:.2f} / {r95:.2f}   (vs {peer}, {k['count']} requests each)")
    report["wer"] = {name: round(wer(pairs[name]), 4) for name in pairs}
    report["transcripts"] = pairs
    print(f"WER over {len(pairs['kombain'])} clips: kombain {report['wer']['kombain']:.3f}, "
          f"wyoming-faster-whisper {report['wer']['peer']:.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"wyoming-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print("report:", path)
    return 0
