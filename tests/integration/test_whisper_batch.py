"""The Whisper runtime decodes live requests that wait together as one batch: real models, the
same text as one at a time, and language detection per item of a batch (multilingual base)."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest

from kombain.streaming.whisper_runtime import DecodeOptions, WhisperRuntime
from tests.conftest import SPEECH_DIR, speech_clips

pytestmark = pytest.mark.asyncio


def _audio(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    pad = np.zeros(4000, np.float32)  # as a live turn has: pre-roll and a tail of silence
    return np.concatenate([pad, pcm, pad, pad])


async def _batched(name: str, tmp_path: Path, clips: list[np.ndarray], copies: int) -> None:
    sizes: list[tuple[str, int]] = []
    runtime = await asyncio.to_thread(WhisperRuntime.load, name, data_dir=tmp_path, workers=1, batch=4,
                                      on_batch=lambda kind, n: sizes.append((kind, n)))
    try:
        alone = [await runtime.transcribe(a, "final", DecodeOptions()) for a in clips]
        assert sizes == [("final", 1)] * len(clips)
        # One worker: the first request runs alone, the rest queue behind it and go in batches.
        together = await asyncio.gather(*[runtime.transcribe(clips[i % len(clips)], "final", DecodeOptions())
                                          for i in range(copies * len(clips))])
        assert max(n for _, n in sizes[len(clips):]) == 4, sizes
        assert sum(n for _, n in sizes[len(clips):]) == copies * len(clips)
        for i, r in enumerate(together):
            a = alone[i % len(clips)]
            assert (r.text, r.language) == (a.text, a.language), (i, r.text, a.text)
    finally:
        await runtime.aclose()


async def test_finals_decoded_together_read_as_when_decoded_alone(tmp_path: Path) -> None:
    clips = [_audio(p) for p, _ in speech_clips()]
    await _batched("tiny.en", tmp_path, clips, copies=2)


async def test_a_batch_of_the_multilingual_model_detects_each_items_language(tmp_path: Path) -> None:
    clips = [_audio(p) for p, _ in speech_clips()[:3]]
    await _batched("base", tmp_path, clips, copies=2)


async def test_a_batch_member_cancelled_while_queued_is_left_out(tmp_path: Path) -> None:
    clip = _audio(SPEECH_DIR / "arctic_a0007.wav")
    sizes: list[int] = []
    runtime = await asyncio.to_thread(WhisperRuntime.load, "tiny.en", data_dir=tmp_path, workers=1, batch=4,
                                      on_batch=lambda kind, n: sizes.append(n))
    try:
        # A 20 s turn first (a window of its own, a few hundred ms of decoding): three short ones wait.
        long = asyncio.create_task(runtime.transcribe(np.tile(clip, 5)[: 20 * 16000], "final", DecodeOptions()))
        while runtime.pending == 0:
            await asyncio.sleep(0.001)
        tasks = [asyncio.create_task(runtime.transcribe(clip, "final", DecodeOptions())) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert not long.done()
        tasks[1].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(done[1], asyncio.CancelledError)
        assert done[0].text == done[2].text and done[0].text  # type: ignore[union-attr]
        assert (await long).duration == 20.0
        assert sizes == [1, 2], sizes
    finally:
        await runtime.aclose()


async def test_partials_leave_a_worker_free_for_finals(tmp_path: Path) -> None:
    """Two workers: while one decodes a partial, a second partial waits for it rather than take
    the other worker, and a final arriving meanwhile starts at once on the free one."""
    clip = _audio(SPEECH_DIR / "arctic_a0007.wav")
    order: list[str] = []
    runtime = await asyncio.to_thread(WhisperRuntime.load, "tiny.en", data_dir=tmp_path, workers=2)

    async def run(name: str, audio: np.ndarray, kind: str, key: object) -> None:
        await runtime.transcribe(audio, kind, DecodeOptions(), key=key)  # type: ignore[arg-type]
        order.append(name)

    try:
        long = asyncio.create_task(run("long partial", np.tile(clip, 5)[: 20 * 16000], "partial", "a"))
        while runtime.pending == 0:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)
        short = asyncio.create_task(run("short partial", clip, "partial", "b"))
        await asyncio.sleep(0.01)
        final = asyncio.create_task(run("final", clip, "final", "c"))
        await asyncio.gather(long, short, final)
        assert order == ["final", "long partial", "short partial"], order
    finally:
        await runtime.aclose()


async def test_partials_with_their_own_prompt_and_prefix_share_a_batch(tmp_path: Path) -> None:
    """Windowed partials of different callers (streaming/partial_window.py) each force their own
    shown words as prefix, with their own prompt: they still go in one batch, and each reads as
    when decoded alone (its prefix first, then what follows in its audio)."""
    sizes: list[int] = []
    runtime = await asyncio.to_thread(WhisperRuntime.load, "tiny.en", data_dir=tmp_path, workers=2, batch=4,
                                      on_batch=lambda kind, n: sizes.append(n))
    try:
        a = _audio(SPEECH_DIR / "arctic_a0007.wav")
        b = _audio(SPEECH_DIR / "cards_005.wav")
        jobs = [(a, DecodeOptions(prompt="He said", prefix="And you always", word_timestamps=True)),
                (b, DecodeOptions(prompt="She said", prefix="Eight of spades", word_timestamps=True))]
        # (prompts as long in tokens: a batch cuts each to its shortest, which changes what a longer one says)
        alone = [await runtime.transcribe(x, "partial", o) for x, o in jobs]
        assert sizes == [1, 1]
        blocker = asyncio.create_task(runtime.transcribe(np.tile(a, 5)[: 20 * 16000], "partial", DecodeOptions()))
        while runtime.pending == 0:
            await asyncio.sleep(0.001)
        together = await asyncio.gather(*[runtime.transcribe(x, "partial", o, key=i) for i, (x, o) in enumerate(jobs)])
        await blocker
        assert sizes[2:] == [1, 2], sizes  # the blocker, then both partials in one batch
        for (_, o), one, both in zip(jobs, alone, together, strict=True):
            assert both.text == one.text and both.text.startswith(o.prefix or ""), (both.text, one.text)
            assert [w.word for s in both.segments for w in s.words] == [w.word for s in one.segments for w in s.words]
    finally:
        await runtime.aclose()
