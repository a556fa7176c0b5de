"""Speaker turns from embeddings (pure logic: no model)."""

from __future__ import annotations

import numpy as np

from kombain.streaming.diarize import cluster, name_clusters, speaker_segments, windows
from kombain.streaming.whisper_runtime import Segment, Word


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_windows_cut_long_regions_evenly():
    spans = windows([(0.0, 1.0), (2.0, 11.0)])
    assert spans[0] == (0, 16000)
    assert len(spans) == 4 and spans[1][0] == 32000 and spans[-1][1] == 176000  # 9 s in three 3 s pieces
    assert windows([]) == []


def test_cluster_finds_the_number_of_speakers():
    rng = np.random.default_rng(0)
    a, b = _unit(rng.standard_normal(256)), _unit(rng.standard_normal(256))
    emb = _unit(np.stack([a + 0.02 * rng.standard_normal(256) for _ in range(3)]
                         + [b + 0.02 * rng.standard_normal(256) for _ in range(2)] + [a]))
    assert cluster(emb).tolist() == [0, 0, 0, 1, 1, 0]
    assert cluster(emb[:3]).tolist() == [0, 0, 0]  # one speaker is one cluster
    assert cluster(emb[:1]).tolist() == [0] and cluster(np.zeros((0, 256))).tolist() == []


def test_known_names_and_letters():
    rng = np.random.default_rng(1)
    a, b, c = (_unit(rng.standard_normal(256)) for _ in range(3))
    emb = np.stack([a, b, c])
    labels = np.array([0, 1, 2])
    names = name_clusters(emb, labels, {"ann": b, "zed": _unit(rng.standard_normal(256))})
    assert names == {0: "A", 1: "ann", 2: "B"}  # an unmatched reference names nobody


def test_words_grouped_by_speaker():
    words = tuple(Word(f" w{i}", i * 1.0, i * 1.0 + 0.5, 0.9) for i in range(6))
    seg = Segment(0.0, 5.5, "", -0.1, 0.01, 1.0, words)
    spans = [(0, 3 * 16000), (3 * 16000, 6 * 16000)]
    turns = speaker_segments([seg], spans, ["A", "B"])
    assert [(t.speaker, t.text) for t in turns] == [("A", "w0 w1 w2"), ("B", "w3 w4 w5")]
    assert speaker_segments([], spans, ["A", "B"]) == []


def test_live_speaker_labels_stay_consistent():
    from kombain.streaming.speaker_tracker import SpeakerTracker

    rng = np.random.default_rng(2)
    a, b = _unit(rng.standard_normal(256)), _unit(rng.standard_normal(256))
    tracker = SpeakerTracker()
    turns = [a, b, a, a, b]
    got = [tracker.assign(_unit(v + 0.02 * rng.standard_normal(256))) for v in turns]
    assert got == ["A", "B", "A", "A", "B"] and tracker.speakers == 2
    capped = SpeakerTracker(max_speakers=1)
    assert [capped.assign(v) for v in (a, b)] == ["A", "A"]  # past the cap: the closest speaker
