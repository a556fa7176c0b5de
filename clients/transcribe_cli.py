"""`kombain transcribe FILE`: stream a file at 1x over /v1/realtime and print transcripts with timings."""

from __future__ import annotations

import argparse
import asyncio
import sys

import httpx

from kombain.clients.realtime_client import TimedEvent, stream_file


def run(args: argparse.Namespace) -> int:
    if args.rest:
        return _rest(args)
    last_stop: dict[str, float] = {}

    def show(ev: TimedEvent) -> None:
        e = ev.event
        t = e["type"]
        if t == "input_audio_buffer.speech_started":
            print(f"[{ev.t:6.2f}s] speech started at {e['audio_start_ms']} ms", flush=True)
        elif t == "input_audio_buffer.speech_stopped":
            last_stop[e["item_id"]] = ev.t
            print(f"[{ev.t:6.2f}s] speech stopped at {e['audio_end_ms']} ms", flush=True)
        elif t == "conversation.item.input_audio_transcription.delta":
            print(f"[{ev.t:6.2f}s]   partial: {e['delta']!r}", flush=True)
        elif t == "conversation.item.input_audio_transcription.completed":
            lag = ev.t - last_stop.get(e["item_id"], ev.t)
            print(f"[{ev.t:6.2f}s] FINAL ({lag * 1000:.0f} ms after speech stopped): {e['transcript']}", flush=True)
        elif t == "error":
            print(f"[{ev.t:6.2f}s] error: {e['error']['message']}", file=sys.stderr, flush=True)

    try:
        asyncio.run(stream_file(args.url, args.file, speed=args.speed, api_key=args.api_key, on_event=show))
    except (OSError, ValueError) as exc:
        print(f"kombain transcribe: {exc}", file=sys.stderr)
        return 1
    return 0


def _rest(args: argparse.Namespace) -> int:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    with open(args.file, "rb") as f:
        r = httpx.post(args.url.rstrip("/") + "/v1/audio/transcriptions", files={"file": f},
                       data={"model": "whisper-1", "response_format": "text"}, headers=headers, timeout=600)
    if r.status_code != 200:
        print(f"kombain transcribe: HTTP {r.status_code}: {r.text}", file=sys.stderr)
        return 1
    print(r.text.strip())
    return 0
