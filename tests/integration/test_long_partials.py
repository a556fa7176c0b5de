"""Words on screen during a long sentence (issue 24): an 8.5 s turn of recorded speech (three clips
joined, loadtest/long_sentences.py) streamed at 1x to the live server (bundled tiny.en, windowed
partials): words show while it is spoken, and what shows is never taken back by the final."""

from __future__ import annotations

import pytest

from kombain.clients.realtime_client import stream_audio
from kombain.loadtest.long_sentences import TEST_SENTENCE, sentence
from kombain.loadtest.stt_words import COMPLETED, DELTA, words_of
from kombain.streaming.stabilizer import same_word

pytestmark = pytest.mark.asyncio


async def test_a_long_sentence_shows_its_words_while_spoken_and_never_takes_them_back(live_server):
    audio, reference = sentence(TEST_SENTENCE)  # pauses of 0.3 s between its three clips
    length_s = len(audio) / 16000
    assert 8 <= length_s <= 10
    result = await stream_audio(live_server.url, audio, 16000, trailing_silence_s=1.0, settle_s=10)
    assert not result.of("error"), result.of("error")
    finals = result.of(COMPLETED)
    assert len(finals) == 1, [f.event["transcript"] for f in finals]
    final = words_of(finals[0].event["transcript"])
    deltas = result.of(DELTA)
    assert deltas and all(d.t < finals[0].t for d in deltas)
    # Words show while the sentence is spoken, not in a burst at its end (the client sends at 1x,
    # so its clock is the audio's): the first before its last 2 s, and more than a third by then.
    shown_by = [(d.t, len(words_of(d.event["delta"]))) for d in deltas]
    early = sum(n for t, n in shown_by if t < length_s - 2.0)
    assert early >= len(words_of(reference)) // 3, (shown_by, length_s)
    # What showed is what the final says, word for word (the final keeps a shown number's
    # spelling): deltas only add words, and the final starts with all of them.
    shown = words_of("".join(d.event["delta"] for d in deltas))
    assert len(shown) <= len(final) and all(same_word(a, b) for a, b in zip(shown, final, strict=False)), (
        shown, final)
