"""`python -m kombain.loadtest soak --seconds 120`: live callers while hostile clients push.

For `--seconds` (bounded), `--callers` realtime WebSocket callers speak the recorded clips at real
time (server VAD) and time each final (speech stopped -> transcript completed), while beside them:
one long FLAC (`--long-file-s`, 3 h 50 min by default: the clips every 10 minutes, silence
between) is transcribed over REST; chunked uploads of 100 MiB with no Content-Length are sent
until refused (bytes sent before the 413); malformed WebRTC offers (tests/fuzz's mutations), WebSocket
handshakes from a foreign Origin, speech requests with a NUL and uploads that are not audio go
round. The server's RSS is sampled throughout: before (after a warm-up request), peak, and
`--settle` seconds after the long file's answer. Every answer is counted by status: a 5xx or a
request left unanswered is a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import websockets

from kombain.loadtest.long_audio import RATE, clips_audio, long_flac
from kombain.loadtest.stats import summary

_CHUNK_S = 0.02


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("soak", help="live callers beside hostile uploads and offers: memory and final latency")
    p.add_argument("--seconds", type=float, default=120, help="how long the callers and hostile clients run")
    p.add_argument("--callers", type=int, default=2)
    p.add_argument("--long-file-s", type=float, default=3 * 3600 + 50 * 60,
                   help="duration of the long FLAC transcribed once (0: none)")
    p.add_argument("--settle", type=float, default=60, help="seconds after the long file's answer to read RSS again")
    p.add_argument("--upload-mib", type=int, default=100, help="size of each chunked upload without a length")
    p.add_argument("--audio", type=Path, default=Path("tests/data/speech"))
    p.add_argument("--url", help="an already running server (memory is then not sampled unless --pid)")
    p.add_argument("--pid", type=int, help="with --url: the server's process id, to sample its memory")
    p.add_argument("--out", type=Path, default=Path("loadtest/results"))
    return p


def run(args: argparse.Namespace) -> int:
    from kombain.loadtest.server_proc import local_server

    if not 10 <= args.seconds <= 3600 or not 1 <= args.callers <= 32:
        print("--seconds must be 10-3600 and --callers 1-32", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    if args.url:
        report = asyncio.run(soak(args.url, args.pid, args))
    else:
        env = {"KOMBAIN_WEBRTC_HOSTS": "127.0.0.1"}  # offers that are still valid gather on loopback only
        with local_server(env, args.out / "soak-server.log") as (url, pid):
            report = asyncio.run(soak(url, pid, args))
    path = args.out / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    print(f"\nwrote {path}")
    return 0 if report["failures"] == 0 else 1


class Memory:
    """RSS of the server process, sampled every 0.25 s."""

    def __init__(self, pid: int | None) -> None:
        self.proc = psutil.Process(pid) if pid else None
        self.samples: list[tuple[float, float]] = []

    def now_mb(self) -> float | None:
        return self.proc.memory_info().rss / 2**20 if self.proc else None

    async def run(self) -> None:
        while self.proc is not None:
            self.samples.append((time.monotonic(), self.proc.memory_info().rss / 2**20))
            await asyncio.sleep(0.25)

    def peak_mb(self, since: float = 0.0) -> float | None:
        values = [mb for t, mb in self.samples if t >= since]
        return max(values) if values else None


async def soak(url: str, pid: int | None, args: argparse.Namespace) -> dict[str, Any]:
    speech, texts = clips_audio(args.audio, gap_s=1.2)
    statuses: dict[str, dict[str, int]] = {}
    finals: list[float] = []
    memory = Memory(pid)
    async with httpx.AsyncClient(timeout=60) as http:
        await _warm_up(http, url, speech)
        await asyncio.sleep(2)
        before = memory.now_mb()
        sampler = asyncio.create_task(memory.run())
        start = time.monotonic()
        stop = start + args.seconds
        long_done: dict[str, Any] = {}
        tasks = [asyncio.create_task(_caller(url, speech, stop, finals, statuses)) for _ in range(args.callers)]
        mib_sent: list[float] = []
        tasks.append(asyncio.create_task(_hostile(url, http, stop, statuses, args.upload_mib, mib_sent)))
        long_task = None
        if args.long_file_s > 0:
            data, _ = await asyncio.to_thread(long_flac, args.audio, args.long_file_s)
            long_task = asyncio.create_task(_long_file(url, data, statuses, long_done))
        await asyncio.gather(*tasks)
        if long_task is not None:
            await long_task
        settle_from = long_done.pop("answered_at", time.monotonic())
        await asyncio.sleep(max(0.0, settle_from + args.settle - time.monotonic()))
        after = memory.now_mb()
        sampler.cancel()
    failures = sum(n for kind in statuses.values() for code, n in kind.items()
                   if code.startswith("5") or code in ("unanswered", "reset", "error"))
    return {
        "seconds": args.seconds, "callers": args.callers,
        "memory_mb": {"before": _r(before), "peak": _r(memory.peak_mb()), "after": _r(after),
                      "peak_growth": _r(memory.peak_mb() - before) if before and memory.peak_mb() else None,
                      "after_growth": _r(after - before) if before and after else None,
                      "after_is_s_after_long_file": args.settle},
        "long_file": long_done,
        "finals": summary(finals),
        "statuses": statuses,
        # what the client had sent of each chunked upload when its 413 came: the server reads the
        # limit (KOMBAIN_MAX_UPLOAD_BYTES + 64 KiB); the rest is what the kernel's socket buffers held
        "chunked_upload_mib_sent_before_answer": mib_sent,
        "failures": failures,
        "clips": len(texts),
    }


def _r(x: float | None) -> float | None:
    return round(x, 1) if x is not None else None


def _count(statuses: dict[str, dict[str, int]], kind: str, code: int | str) -> None:
    bucket = statuses.setdefault(kind, {})
    bucket[str(code)] = bucket.get(str(code), 0) + 1


async def _warm_up(http: httpx.AsyncClient, url: str, speech: np.ndarray) -> None:
    """One request of each kind first, so one-time allocations (models' first use) are not counted."""
    wav = _wav(speech[: RATE * 20])
    r = await http.post(url + "/v1/audio/transcriptions", files={"file": ("w.wav", wav, "audio/wav")},
                        data={"model": "whisper-1"})
    r.raise_for_status()
    await http.post(url + "/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": "Warm up."})


def _wav(pcm: np.ndarray) -> bytes:
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


async def _caller(url: str, speech: np.ndarray, stop: float, finals: list[float],
                  statuses: dict[str, dict[str, int]]) -> None:
    """Speak the clips at real time in a loop (input at 16 kHz as binary frames) until `stop`;
    record each final's delay after its speech_stopped."""
    import soxr

    pcm24 = (soxr.resample(speech.astype(np.float32) / 32768, RATE, 24000) * 32767).astype("<i2").tobytes()
    step = int(24000 * _CHUNK_S) * 2
    stopped: dict[str, float] = {}
    ws_url = url.replace("http", "ws", 1) + "/v1/realtime"
    try:
        async with websockets.connect(ws_url, max_size=2**24) as ws:
            async def reader() -> None:
                async for message in ws:
                    event = json.loads(message)
                    kind = event["type"]
                    if kind == "input_audio_buffer.speech_stopped":
                        stopped[event["item_id"]] = time.monotonic()
                    elif kind == "conversation.item.input_audio_transcription.completed":
                        t = stopped.pop(event["item_id"], None)
                        if t is not None:
                            finals.append(time.monotonic() - t)
                    elif kind == "error":
                        _count(statuses, "caller_error_events", event.get("error", {}).get("code") or "?")

            read = asyncio.create_task(reader())
            await ws.send(json.dumps({"type": "session.update", "session": {
                "type": "transcription", "audio": {"input": {"turn_detection": {"type": "server_vad"}}}}}))
            t0 = time.monotonic()
            sent = 0
            while time.monotonic() < stop:
                for i in range(0, len(pcm24), step):
                    if time.monotonic() >= stop:
                        break
                    await ws.send(pcm24[i : i + step])
                    sent += 1
                    await asyncio.sleep(max(0.0, t0 + sent * _CHUNK_S - time.monotonic()))
            await ws.send(pcm24[:0] + bytes(24000 * 2 * 2))  # 2 s of silence: the last turn ends
            await asyncio.sleep(3)
            read.cancel()
            _count(statuses, "callers", "completed")
    except (OSError, websockets.WebSocketException) as exc:
        _count(statuses, "callers", f"error: {type(exc).__name__}")
        _count(statuses, "callers", "error")


async def _long_file(url: str, data: bytes, statuses: dict[str, dict[str, int]], done: dict[str, Any]) -> None:
    t0 = time.monotonic()
    try:
        async with httpx.AsyncClient(timeout=3600) as http:
            r = await http.post(url + "/v1/audio/transcriptions", files={"file": ("long.flac", data, "audio/flac")},
                                data={"model": "whisper-1"})
        _count(statuses, "long_file", r.status_code)
        body = r.json() if r.status_code == 200 else {}
        done.update({"status": r.status_code, "bytes": len(data), "seconds_to_answer": round(time.monotonic() - t0, 1),
                     "words": len(str(body.get("text", "")).split()),
                     "audio_seconds": (body.get("usage") or {}).get("seconds")})
    except httpx.HTTPError as exc:
        _count(statuses, "long_file", "unanswered")
        done["error"] = repr(exc)
    done["answered_at"] = time.monotonic()


async def _hostile(url: str, http: httpx.AsyncClient, stop: float, statuses: dict[str, dict[str, int]],
                   upload_mib: int, mib_sent: list[float]) -> None:
    """Round after round of what a careless or hostile client sends, until `stop`."""
    from kombain.loadtest.webrtc_offers import NAMED, mutate

    rng = random.Random(25)
    offers = list(NAMED.values())
    host, port = url.split("//", 1)[1].split(":")
    round_ = 0
    while time.monotonic() < stop:
        round_ += 1
        if round_ % 10 == 1:  # every tenth round: a big chunked upload, refused when?
            sent = await asyncio.to_thread(_chunked_upload, host, int(port), upload_mib * 2**20)
            _count(statuses, "chunked_upload", sent[0])
            mib_sent.append(round(sent[1] / 2**20, 1))
        text = offers[round_ % len(offers)] if round_ % 2 else mutate(rng)[1]
        for multipart in (False, True):
            try:
                if multipart:
                    r = await http.post(url + "/v1/realtime/calls", files={"sdp": (None, text.encode())})
                else:
                    r = await http.post(url + "/v1/realtime/calls", content=text.encode(),
                                        headers={"Content-Type": "application/sdp"})
                _count(statuses, "webrtc_offer", r.status_code)
                if r.status_code == 201:
                    await http.delete(url + r.headers["location"])
            except httpx.HTTPError:
                _count(statuses, "webrtc_offer", "unanswered")
        try:
            async with websockets.connect(url.replace("http", "ws", 1) + "/v1/realtime",
                                          origin=websockets.Origin("https://evil.example")):
                _count(statuses, "foreign_origin_ws", "accepted")
        except websockets.InvalidStatus as exc:
            _count(statuses, "foreign_origin_ws", exc.response.status_code)
        r = await http.post(url + "/v1/audio/speech", json={"model": "tts-1", "voice": "alloy",
                                                            "input": "hello\u0000world", "response_format": "wav"})
        _count(statuses, "speech_with_nul", r.status_code if len(r.content) > 20000 else f"{r.status_code} short")
        r = await http.post(url + "/v1/audio/transcriptions", files={"file": ("x.wav", rng.randbytes(4096), "audio/wav")})
        _count(statuses, "not_audio_upload", r.status_code)
        await asyncio.sleep(0.5)


def _chunked_upload(host: str, port: int, total: int) -> tuple[str, int]:
    """A multipart transcription upload of `total` bytes sent chunked with no Content-Length:
    (the status it got, body bytes sent before the answer came)."""
    import select

    piece = b"\0" * 65536
    with socket.create_connection((host, port)) as s:
        s.sendall(f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: {host}:{port}\r\nTransfer-Encoding: chunked\r\n"
                  "Content-Type: multipart/form-data; boundary=XyZ\r\n\r\n".encode())
        head = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        s.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        sent, answer = len(head), b""
        s.setblocking(False)
        deadline = time.monotonic() + 60
        while b"\r\n" not in answer and time.monotonic() < deadline:
            readable, writable, _ = select.select([s], [s] if sent < total else [], [], 1)
            try:
                if readable:
                    data = s.recv(4096)
                    if not data:
                        break
                    answer += data
                elif writable:
                    sent += max(0, s.send(b"%x\r\n%s\r\n" % (len(piece), piece)) - 8)
            except (BrokenPipeError, ConnectionResetError):
                return "reset", sent
    status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/1.1 ") else "unanswered"
    return status, sent
