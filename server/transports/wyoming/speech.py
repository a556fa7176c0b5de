"""Wyoming text to speech on the shared Piper voice pool: `synthesize` gives one audio stream
(audio-start, audio-chunk..., audio-stop) whose first clause is spoken as soon as it is made;
`synthesize-start` / `synthesize-chunk`... / `synthesize-stop` gives one audio stream per chunk of
text (a sentence, the first clause sooner) as soon as it is made, then `synthesize-stopped`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from kombain.server.transports.wyoming.protocol import BadEvent, VoiceChoice, encode
from kombain.streaming.chunker import ChunkerConfig
from kombain.streaming.tts import SpeechStream, UnknownVoice, VoicePool

CHUNK_SECONDS = 0.5  # longest audio-chunk event sent
# A Wyoming answer is usually one short sentence, spoken by a satellite as it arrives: its first
# audio leaves after at most four words (half the first-audio time of the six a conversation
# reply starts with, docs/performance.md#wyoming), at the cost of a seam after them.
CHUNKER = ChunkerConfig(first_min_words=2, first_max_words=4)


def pick_voice(pool: VoicePool, choice: VoiceChoice) -> str:
    """A voice id for the request: by name, else the first of the language, else the default.
    A speaker is accepted only where the voice has it (Piper voices served here have one speaker)."""
    if choice.name:
        try:
            voice = pool.resolve(choice.name)
        except UnknownVoice:
            names = ", ".join(v.id for v in pool.voices())
            raise BadEvent(f"unknown voice {choice.name!r}; available: {names}", "voice_not_found") from None
    elif choice.language:
        lang = choice.language.replace("-", "_").lower()
        matches = [v.id for v in pool.voices() if v.language.lower() == lang
                   or v.language.lower().split("_")[0] == lang]
        if not matches:
            raise BadEvent(f"no voice for language {choice.language!r}", "voice_not_found")
        voice = matches[0]
    else:
        voice = pool.default_voice
    if choice.speaker and choice.speaker not in ("0", "default", voice):
        raise BadEvent(f"voice {voice!r} has no speaker {choice.speaker!r}", "speaker_not_found")
    return voice


def open_stream(pool: VoicePool, voice: str) -> tuple[SpeechStream, int]:
    rate = int(pool.catalog[voice].sample_rate)
    return pool.stream(voice, rate, chunker=CHUNKER), rate


async def play(stream: SpeechStream, rate: int, send: Callable[[bytes], Awaitable[None]], *,
               per_chunk: bool) -> None:
    """Send the stream's audio: one audio-start..audio-stop for all of it, or (`per_chunk`) one
    per chunk of text, each as soon as it is synthesised."""
    fmt: dict[str, Any] = {"rate": rate, "width": 2, "channels": 1}
    step = max(2, int(rate * CHUNK_SECONDS) * 2)
    started = False
    async for chunk in stream:
        if not started or per_chunk:
            await send(encode("audio-start", fmt))
            started = True
        for i in range(0, len(chunk.pcm), step):
            await send(encode("audio-chunk", fmt, chunk.pcm[i:i + step]))
        if per_chunk:
            await send(encode("audio-stop"))
    if not per_chunk:
        if not started:
            await send(encode("audio-start", fmt))
        await send(encode("audio-stop"))
