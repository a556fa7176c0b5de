"""Smart Turn v3.2 on real recorded speech: whole utterances versus the same clips cut mid-sentence.

Needs the ONNX file from the pipecat-ai wheel (`pip install --no-deps pipecat-ai`); skipped without it.
"""

from __future__ import annotations

import statistics
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from kombain.streaming.smart_turn import SmartTurnModel, features, find_model
from tests.conftest import SPEECH_DIR

pytestmark = pytest.mark.skipif(find_model() is None, reason="pipecat-ai (Smart Turn model) not installed")

SR = 16000
FRAME = SR // 100  # 10 ms


@dataclass
class Clip:
    name: str
    text: str
    complete: np.ndarray  # the whole utterance, trailing silence trimmed
    cut: np.ndarray  # the same audio cut at a word boundary in the middle of the sentence
    cut_words: str


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SR, 1, 2), path
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0


def frame_db(audio: np.ndarray) -> np.ndarray:
    """Level of each 10 ms frame, in dB."""
    n = len(audio) // FRAME
    rms = np.sqrt((audio[: n * FRAME].reshape(n, FRAME) ** 2).mean(axis=1))
    return 20 * np.log10(rms + 1e-9)


def trim_trailing_silence(audio: np.ndarray) -> np.ndarray:
    """Cut after the last frame 10 dB above the recording's noise floor (its 5th-percentile frame).

    The model is sensitive to how the last word's decay is cut (a0007 "...degree" scores 0.25-0.96
    depending on it), so keep the decay: a 15 dB threshold already clips it."""
    db = frame_db(audio)
    loud = np.nonzero(db > np.percentile(db, 5) + 10)[0]
    return audio[: (loud[-1] + 2) * FRAME]  # keep one more 10 ms frame of decay


def quietest_point(audio: np.ndarray, around_s: float, within_s: float = 0.08) -> int:
    """The sample at the centre of the quietest 10 ms frame near `around_s`: Whisper's word timestamps
    are only good to a few tens of milliseconds, so snap the cut into the gap between the words."""
    db = frame_db(audio)
    lo = max(0, int((around_s - within_s) * 100))
    hi = min(len(db), int((around_s + within_s) * 100) + 1)
    return (lo + int(np.argmin(db[lo:hi]))) * FRAME + FRAME // 2


@pytest.fixture(scope="module")
def model() -> SmartTurnModel:
    return SmartTurnModel.load(threads=1)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Clip]:
    from faster_whisper import WhisperModel

    from kombain.streaming.models import resolve_stt_model

    stt_dir = resolve_stt_model("tiny.en", tmp_path_factory.mktemp("stt"))
    stt = WhisperModel(str(stt_dir), device="cpu", compute_type="int8")
    out = []
    for line in (SPEECH_DIR / "transcripts.tsv").read_text().splitlines()[1:]:
        name, text = line.split("\t")
        complete = trim_trailing_silence(read_wav(SPEECH_DIR / name))
        segments, _ = stt.transcribe(complete, word_timestamps=True, temperature=0)
        words = [w for s in segments for w in (s.words or [])]
        if len(words) < 2:
            continue
        k = len(words) // 2  # keep the first half of the words
        cut_at = quietest_point(complete, (words[k - 1].end + words[k].start) / 2)
        if not SR * 0.2 < cut_at < len(complete) - SR * 0.2:
            continue
        kept = "".join(w.word for w in words[:k]).strip()
        out.append(Clip(name, text, complete, complete[:cut_at], kept))
    assert len(out) >= 6, "expected most test clips to give a mid-sentence cut"
    return out


def test_complete_utterances_score_higher_than_cut_ones(model: SmartTurnModel, clips: list[Clip]) -> None:
    complete, cut = [], []
    print()
    for c in clips:
        p_complete, p_cut = model.predict(c.complete), model.predict(c.cut)
        complete.append(p_complete)
        cut.append(p_cut)
        print(f"{c.name:18} complete {p_complete:.3f} ({len(c.complete) / SR:.2f} s) \"{c.text}\"")
        print(f"{'':18} cut      {p_cut:.3f} ({len(c.cut) / SR:.2f} s) \"{c.cut_words} |\"")
    print(f"mean complete {statistics.mean(complete):.3f} (median {statistics.median(complete):.3f}), "
          f"mean cut {statistics.mean(cut):.3f} (median {statistics.median(cut):.3f})")
    assert all(0.0 <= p <= 1.0 for p in complete + cut)
    assert statistics.median(complete) > 0.5
    assert statistics.mean(complete) > statistics.mean(cut) + 0.1


def test_preprocessing_matches_transformers_on_speech(clips: list[Clip]) -> None:
    """The numpy features equal transformers' WhisperFeatureExtractor, which the model was trained on."""
    transformers = pytest.importorskip("transformers")
    fe = transformers.WhisperFeatureExtractor(chunk_length=8)
    for c in clips:
        x = np.pad(c.complete, (8 * SR - len(c.complete), 0))
        want = fe(x, sampling_rate=SR, padding="max_length", max_length=8 * SR, truncation=True,
                  do_normalize=True, return_tensors="np").input_features
        np.testing.assert_allclose(features(c.complete), want, atol=1e-4)


def test_concurrent_predictions_agree_and_timing(model: SmartTurnModel, clips: list[Clip]) -> None:
    audio = [c.complete for c in clips] + [c.cut for c in clips]
    serial = [model.predict(a) for a in audio]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(model.predict, audio * 3))
    np.testing.assert_allclose(parallel, serial * 3, atol=1e-6)

    longest = max(audio, key=len)
    model.predict(longest)  # warm up
    predict_s, features_s = [], []
    for _ in range(10):
        t0 = time.perf_counter()
        features(longest)
        t1 = time.perf_counter()
        model.predict(longest)
        t2 = time.perf_counter()
        features_s.append(t1 - t0)
        predict_s.append(t2 - t1)
    print(f"\npredict() on one thread: median {statistics.median(predict_s) * 1000:.1f} ms "
          f"(of which features {statistics.median(features_s) * 1000:.1f} ms), "
          f"min {min(predict_s) * 1000:.1f} ms, max {max(predict_s) * 1000:.1f} ms")
