"""`python -m kombain.loadtest.repeated_speech`: speech that really repeats, on REST and live.

The recorded clips said twice or three times compress like a decoder's repetition loop; a filter
against such loops once threw whole windows of them away. For each case: words kept and WER
against the reference on REST (`/v1/audio/transcriptions`) and on the live path (a realtime
session in manual mode: the buffer is committed by the server at 30 s, the rest by the client),
and the live transcript's WER against REST's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import sys
import wave
from pathlib import Path

import httpx
import numpy as np
import soxr
import websockets

from kombain.loadtest.long_audio import RATE
from kombain.loadtest.wer import normalize, wer

CASES = {  # name: (clips (indexes into transcripts.tsv), times said)
    "cards x2": ([0, 1, 2, 3, 4], 2),
    "8 clips x1": (list(range(8)), 1),
    "8 clips x2": (list(range(8)), 2),
    "8 clips x3": (list(range(8)), 3),
}


def build(audio_dir: Path, clips: list[int], times: int) -> tuple[np.ndarray, str]:
    """The chosen clips, each after 0.3 s of silence, said `times` times: PCM16 at 16 kHz, and the reference."""
    from kombain.streaming.decode_file import decode_audio_file

    rows = [r.split("\t", 1) for r in (audio_dir / "transcripts.tsv").read_text().strip().splitlines()[1:]]
    parts = []
    for i in clips:
        parts += [np.zeros(int(0.3 * RATE), np.float32), decode_audio_file((audio_dir / rows[i][0]).read_bytes())]
    once = (np.clip(np.concatenate(parts), -1, 1) * 32767).astype("<i2")
    return np.concatenate([once] * times), " ".join(" ".join(rows[i][1] for i in clips) for _ in range(times))


async def rest(url: str, pcm: np.ndarray) -> str:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    async with httpx.AsyncClient(timeout=300) as http:
        r = await http.post(url + "/v1/audio/transcriptions", files={"file": ("a.wav", buf.getvalue(), "audio/wav")},
                            data={"model": "whisper-1"})
    r.raise_for_status()
    return str(r.json()["text"])


async def live(url: str, pcm: np.ndarray) -> str:
    pcm24 = (soxr.resample(pcm.astype(np.float32) / 32768, RATE, 24000) * 32767).astype("<i2").tobytes()
    async with websockets.connect(url.replace("http", "ws", 1) + "/v1/realtime", max_size=2**24) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "turn_detection": None}}))
        step = 48000  # 1 s of 24 kHz PCM16, sent at 10x real time
        for i in range(0, len(pcm24), step):
            await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                      "audio": base64.b64encode(pcm24[i : i + step]).decode()}))
            await asyncio.sleep(0.1)
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        items: list[str] = []
        texts: dict[str, str] = {}
        async with asyncio.timeout(120):
            while True:
                event = json.loads(await ws.recv())
                if event["type"] == "input_audio_buffer.committed":
                    items.append(event["item_id"])
                elif event["type"] == "conversation.item.input_audio_transcription.completed":
                    texts[event["item_id"]] = event["transcript"]
                    if items and all(i in texts for i in items) and len(items) >= 1 + (len(pcm) > 30 * RATE):
                        break
                elif event["type"] == "error" and event["error"].get("code") != "input_audio_buffer_commit_empty":
                    raise RuntimeError(event["error"])
    return " ".join(texts[i] for i in items)


async def main(url: str, audio_dir: Path) -> list[dict[str, object]]:
    rows = []
    for name, (clips, times) in CASES.items():
        pcm, reference = build(audio_dir, clips, times)
        r, lv = await rest(url, pcm), await live(url, pcm)
        ref_words = len(normalize(reference))
        rows.append({"case": name, "seconds": round(len(pcm) / RATE, 1), "words": ref_words,
                     "rest_kept": round(len(normalize(r)) / ref_words, 3), "rest_wer": round(wer([(reference, r)]), 3),
                     "live_kept": round(len(normalize(lv)) / ref_words, 3), "live_wer": round(wer([(reference, lv)]), 3),
                     "live_vs_rest_wer": round(wer([(r, lv)]), 3)})
        print(rows[-1], flush=True)
    return rows


def cli(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kombain.loadtest.repeated_speech", description=__doc__)
    ap.add_argument("--url", help="an already running server (default: start one here)")
    ap.add_argument("--audio", type=Path, default=Path("tests/data/speech"))
    args = ap.parse_args(argv)
    if args.url:
        asyncio.run(main(args.url, args.audio))
        return 0
    from kombain.loadtest.server_proc import local_server

    with local_server() as (url, _pid):
        asyncio.run(main(url, args.audio))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
