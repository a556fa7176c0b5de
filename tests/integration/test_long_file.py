"""A long file is decoded and transcribed in bounded pieces (decode, transcribe, drop): real
FLAC, real PyAV, the bundled tiny.en. The memory it saves is measured in the soak
(`python -m kombain.loadtest soak`), not here."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest

from kombain.loadtest.long_audio import long_flac
from kombain.loadtest.wer import normalize
from kombain.streaming.decode_file import BadAudioFile, decode_audio_file, decode_audio_pieces
from kombain.streaming.long_file import transcribe_pieces
from kombain.streaming.whisper_runtime import DecodeOptions, WhisperRuntime
from tests.conftest import SPEECH_DIR, LiveServer, speech_clips

RATE = 16000
SECONDS = 150.0
EVERY = 50.0  # the clips (~24 s) at 0, 50 and 100 s


@pytest.fixture(scope="module")
def flac() -> bytes:
    data, placed = long_flac(SPEECH_DIR, SECONDS, every_s=EVERY)
    assert placed == 3
    return data


def test_pieces_are_bounded_and_add_up_to_the_whole(flac: bytes) -> None:
    pieces = decode_audio_pieces(flac, piece_seconds=20)
    first = next(pieces)  # a generator: nothing past the first piece is decoded yet
    rest = list(pieces)
    lengths = [len(p) for p in [first, *rest]]
    assert all(10 * RATE <= n <= 20 * RATE + 1024 for n in lengths[:-1]), lengths  # cut in its last 10 s
    assert 0 < lengths[-1] <= 20 * RATE + 1024
    whole = decode_audio_file(flac)
    assert len(whole) == sum(lengths) == pytest.approx(SECONDS * RATE, abs=RATE // 10)
    assert np.array_equal(np.concatenate([first, *rest]), whole)


def test_pieces_cut_in_quiet_places(flac: bytes) -> None:
    """The clips hold pauses; a cut lands in the quietest 50 ms of a piece's last 10 s."""
    edges = np.cumsum([len(p) for p in decode_audio_pieces(flac, piece_seconds=12)])[:-1]
    whole = decode_audio_file(flac)
    for edge in edges:
        assert np.sqrt(np.mean(np.square(whole[edge : edge + RATE // 20]))) < 0.01, edge / RATE


def test_bad_audio_is_refused_at_the_first_piece() -> None:
    with pytest.raises(BadAudioFile):
        next(decode_audio_pieces(b"not audio at all" * 100))
    with pytest.raises(BadAudioFile):
        next(decode_audio_pieces(b""))


async def test_transcribed_in_pieces_as_a_whole_file_reads(flac: bytes, tmp_path: Path) -> None:
    runtime = await asyncio.to_thread(WhisperRuntime.load, "tiny.en", data_dir=tmp_path)
    try:
        options = DecodeOptions(beam_size=5, vad_filter=True, timestamps=True)
        result = await transcribe_pieces(runtime, decode_audio_pieces(flac, piece_seconds=30), options)
    finally:
        await runtime.aclose()
    assert result.duration == pytest.approx(SECONDS, abs=0.1)
    reference = normalize(" ".join(text for _, text in speech_clips()))
    assert len(normalize(result.text)) >= 0.9 * 3 * len(reference), result.text
    starts = [s.start for s in result.segments]
    assert starts == sorted(starts) and 0 <= starts[0] and result.segments[-1].end <= SECONDS + 0.1
    # Times are on the file's clock: speech at 0, 50 and 100 s, each block ~24 s long.
    for block in (0, 1, 2):
        assert any(block * EVERY - 1 <= s.start < block * EVERY + 5 for s in result.segments), starts
    assert not any(26 < s.start % EVERY < EVERY - 1 for s in result.segments), starts


def test_rest_transcribes_a_long_file_in_pieces(flac: bytes, live_server: LiveServer) -> None:
    """Through POST /v1/audio/transcriptions (60 s pieces): the whole file's text, times on its clock."""
    r = httpx.post(live_server.url + "/v1/audio/transcriptions", timeout=120,
                   files={"file": ("long.flac", flac, "audio/flac")},
                   data={"model": "whisper-1", "response_format": "verbose_json"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["duration"] == pytest.approx(SECONDS, abs=0.1)
    reference = normalize(" ".join(text for _, text in speech_clips()))
    assert len(normalize(body["text"])) >= 0.9 * 3 * len(reference), body["text"]
    starts = [s["start"] for s in body["segments"]]
    for block in (0, 1, 2):
        assert any(block * EVERY - 1 <= s < block * EVERY + 5 for s in starts), starts
