"""First-audio latency of the voice pool, run by hand: p50/p95/p99 over N runs, at 1..C concurrent streams.

    python -m loadtest.tts_bench --runs 30 --concurrency 1 2 4

Each run pushes one reply the way an LLM would (a few characters every few milliseconds) and
reports two first-audio latencies: `pushed` from the first text pushed to the first audio chunk
out of the stream (includes waiting for the tokens that complete the first clause), and `ready`
from the first chunk of text ready to speak to its audio produced (what the server's
kombain_tts_first_audio_seconds records). Also the real-time factor (wall time / audio) of a reply.

    python -m loadtest.tts_bench --prompts 50 [--redis redis://127.0.0.1:6379/0]

measures the synthesis cache instead: a whole IVR prompt pushed at once to its first audio chunk out
of the stream, rendered (cache emptied before each run), from this node's memory, and from the shared
store (Redis: memory emptied before each run; without --redis a redis-server on a free loopback
port is started if one is installed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path

from kombain.streaming.tts import VoicePool

SENTENCES = [
    "Sure, I can help with that. Your appointment is on Tuesday at three thirty in the afternoon.",
    "The weather today is sunny, with a light breeze from the west. Bring a hat if you go out.",
    "Thanks for calling. Please hold while I look up your account, it will only take a moment.",
    "Okay. I have booked a table for four people at seven o'clock, under the name Smith.",
]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


async def one_reply(pool: VoicePool, text: str, piece: int, gap: float) -> tuple[float, float, float, float]:
    """(first audio from first push, first audio from text ready, audio seconds, wall seconds)."""
    stream = pool.stream(rate=24000)
    start = time.perf_counter()

    async def feed() -> None:
        for i in range(0, len(text), piece):
            stream.push_text(text[i : i + piece])
            await asyncio.sleep(gap)
        stream.end_input()

    first, audio = 0.0, 0.0
    async with asyncio.TaskGroup() as tg, stream:
        tg.create_task(feed())
        async for chunk in stream:
            if not first:
                first = time.perf_counter() - start
            audio += chunk.duration
    return first, stream.first_audio_latency or 0.0, audio, time.perf_counter() - start


async def bench(pool: VoicePool, runs: int, concurrency: int, piece: int, gap: float) -> None:
    pushed: list[float] = []
    ready: list[float] = []
    rtfs: list[float] = []
    for r in range(runs):
        texts = [SENTENCES[(r + i) % len(SENTENCES)] for i in range(concurrency)]
        for first, latency, audio, wall in await asyncio.gather(*[one_reply(pool, t, piece, gap) for t in texts]):
            pushed.append(first * 1000)
            ready.append(latency * 1000)
            rtfs.append(wall / audio)
    print(f"concurrency {concurrency:2d}  n={len(pushed):4d}  wall/audio p50 {percentile(rtfs, 50):.3f}")
    for name, ms in (("pushed", pushed), ("ready", ready)):
        print(
            f"    first audio ms ({name:6s}): p50 {percentile(ms, 50):6.1f}  p95 {percentile(ms, 95):6.1f}  "
            f"p99 {percentile(ms, 99):6.1f}  mean {statistics.fmean(ms):6.1f}"
        )


PROMPTS = [
    "Thank you for calling. Your call is important to us.",
    "One moment, please.",
    "Press one for sales, two for support.",
    "Sorry, I did not get that. Please say it again.",
]


async def first_audio(pool: VoicePool, text: str, rate: int = 8000) -> float:
    start = time.perf_counter()
    async with pool.stream(rate=rate) as stream:
        stream.push_text(text)
        stream.end_input()
        async for _ in stream:
            return time.perf_counter() - start
    raise RuntimeError("no audio")


async def bench_prompts(pool: VoicePool, runs: int, url: str | None) -> None:
    def forget_shared() -> None:
        if url:
            import redis

            client = redis.Redis.from_url(url)
            keys = client.keys("kombain:tts:*")
            if keys:
                client.delete(*keys)

    async def series(before: str) -> list[float]:
        out = []
        for r in range(runs):
            text = PROMPTS[r % len(PROMPTS)]
            if before == "render":
                pool.cache.clear()
                forget_shared()
            else:
                await first_audio(pool, text)  # make sure it is cached (memory, and the store)
                await asyncio.sleep(0.02)  # the store's write-back
                if before == "shared":
                    pool.cache.clear()
            out.append((await first_audio(pool, text)) * 1000)
        return out

    kinds = ["render", "memory"] + (["shared"] if pool.cache.store is not None else [])
    for kind in kinds:
        ms = await series(kind)
        print(f"prompt first audio ({kind:6s}) n={len(ms):3d}: p50 {percentile(ms, 50):7.2f}  "
              f"p95 {percentile(ms, 95):7.2f}  p99 {percentile(ms, 99):7.2f}  max {max(ms):7.2f} ms")


def _redis_for_bench(url: str | None):  # type: ignore[no-untyped-def]
    """A store for --prompts: the URL given, or a redis-server started here (None if neither)."""
    import contextlib
    import shutil
    import subprocess
    import tempfile

    from kombain.loadtest.server_proc import free_port

    @contextlib.contextmanager
    def started():  # type: ignore[no-untyped-def]
        if url:
            yield url
            return
        if shutil.which("redis-server") is None:
            yield None
            return
        port = free_port()
        with tempfile.TemporaryDirectory() as folder:
            proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", folder,
                                     "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
            try:
                import redis

                for _ in range(200):
                    try:
                        redis.Redis(port=port).ping()
                        break
                    except redis.ConnectionError:
                        time.sleep(0.05)
                yield f"redis://127.0.0.1:{port}/0"
            finally:
                proc.terminate()
                proc.wait()

    return started()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--voice", default="en_US-joe-medium", help="voice id or path to a Piper .onnx")
    ap.add_argument("--voices-dir", type=Path, default=None)
    ap.add_argument("--workers", type=int, default=0, help="synthesis threads (0 -> cores)")
    ap.add_argument("--piece", type=int, default=4, help="characters per pushed token")
    ap.add_argument("--gap-ms", type=float, default=5.0, help="pause between pushed tokens")
    ap.add_argument("--prompts", type=int, default=0, metavar="RUNS",
                    help="measure the synthesis cache instead: RUNS prompts rendered, from memory, from Redis")
    ap.add_argument("--redis", default=None, help="--prompts: a Redis URL for the shared tier")
    args = ap.parse_args()
    if args.prompts:
        from kombain.server.tts_store import RedisSpeechStore
        from kombain.streaming.tts_cache import SpeechCache

        with _redis_for_bench(args.redis) as url:
            store = RedisSpeechStore(url) if url else None
            pool = VoicePool.load(args.voice, args.voices_dir, workers=args.workers, cache=SpeechCache(store=store))
            try:
                print(f"{os.cpu_count()} cores; shared store: {url or 'none (no redis-server)'}")
                asyncio.run(bench_prompts(pool, args.prompts, url))
            finally:
                pool.close()
        return

    t = time.perf_counter()
    pool = VoicePool.load(args.voice, args.voices_dir, workers=args.workers)
    print(f"voice {pool.default_voice} loaded in {time.perf_counter() - t:.2f}s; "
          f"{os.cpu_count()} cores, {args.workers or os.cpu_count()} synthesis threads")
    try:
        for c in args.concurrency:
            asyncio.run(bench(pool, args.runs, c, args.piece, args.gap_ms / 1000))
    finally:
        pool.close()


if __name__ == "__main__":
    main()
