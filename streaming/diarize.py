"""Who spoke when: speaker turns of a transcript from voice embeddings, clustered.

Speech (Silero VAD regions, cut into pieces of at most 4 s) is embedded piece by piece with
Resemblyzer (1.6 s partials every 0.8 s, averaged); agglomerative clustering (scikit-learn, cosine distance,
average linkage) with a distance threshold finds the number of speakers. Each word of the
transcript takes the speaker of the piece nearest its middle; consecutive words of one speaker
form a segment. Known speakers (reference samples) name the clusters whose centroid is close
enough to their reference, one cluster per name (Hungarian assignment); the others are `A`, `B`...
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kombain.streaming.speaker_encoder import SpeakerEncoder
from kombain.streaming.whisper_runtime import Segment, Word

PIECE_S = 4.0
# Cosine distance under which two clusters are one speaker (average linkage). Chosen on the
# pairwise similarities of the recorded clips (same speaker 0.66-0.85, different 0.39-0.62),
# not on the benchmark's conversations (docs/performance.md).
CLUSTER_DISTANCE = 0.37
# A cluster takes a known speaker's name when its centroid is at least this similar to the reference.
KNOWN_SIMILARITY = 0.6
# A segment also ends at a pause this long even when the speaker stays the same.
SEGMENT_PAUSE_S = 1.5


@dataclass(frozen=True, slots=True)
class SpeakerSegment:
    speaker: str
    start: float
    end: float
    text: str


def windows(regions: Sequence[tuple[float, float]], rate: int = 16000) -> list[tuple[int, int]]:
    """Sample spans to embed: each speech region, a long one cut evenly into pieces of at most
    PIECE_S (a region between pauses is most often one speaker; a longer unit gives a steadier
    embedding than a single 1.6 s window)."""
    spans: list[tuple[int, int]] = []
    for a, b in regions:
        n = max(1, int(np.ceil((b - a) / PIECE_S)))
        step = (b - a) / n
        spans.extend((int((a + i * step) * rate), int((a + (i + 1) * step) * rate)) for i in range(n))
    return spans


def cluster(embeddings: np.ndarray, distance: float = CLUSTER_DISTANCE) -> np.ndarray:
    """Cluster labels 0..k-1, numbered in order of first appearance; k found by the threshold."""
    if len(embeddings) == 0:
        return np.zeros(0, int)
    if len(embeddings) == 1:
        return np.zeros(1, int)
    from sklearn.cluster import AgglomerativeClustering

    raw = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                  distance_threshold=distance).fit_predict(embeddings)
    order: dict[int, int] = {}
    for lab in raw:
        order.setdefault(int(lab), len(order))
    return np.array([order[int(lab)] for lab in raw])


def name_clusters(embeddings: np.ndarray, labels: np.ndarray, references: dict[str, np.ndarray],
                  min_similarity: float = KNOWN_SIMILARITY) -> dict[int, str]:
    """A name for each cluster: a known speaker's (at most one cluster each, by the Hungarian
    assignment on centroid-reference cosine similarity, if similar enough), else A, B, ... in
    order of first appearance (letters taken by names are not reused)."""
    ids = sorted(set(int(x) for x in labels))
    names: dict[int, str] = {}
    if references and ids:
        from scipy.optimize import linear_sum_assignment

        cents = np.stack([embeddings[labels == k].mean(axis=0) for k in ids])
        cents /= np.maximum(np.linalg.norm(cents, axis=1, keepdims=True), 1e-9)
        ref_names = list(references)
        refs = np.stack([references[n] for n in ref_names])
        sim = cents @ refs.T
        rows, cols = linear_sum_assignment(-sim)
        for r, c in zip(rows, cols, strict=True):
            if sim[r, c] >= min_similarity:
                names[ids[r]] = ref_names[c]
    letters = iter(label for label in _letters() if label not in set(names.values()))
    for k in ids:
        if k not in names:
            names[k] = next(letters)
    return names


def _letters() -> list[str]:
    single = list(string.ascii_uppercase)
    return single + [a + b for a in single for b in single]


def speaker_segments(segments: Sequence[Segment], spans: Sequence[tuple[int, int]], speakers: Sequence[str],
                     rate: int = 16000) -> list[SpeakerSegment]:
    """Words given the speaker of the piece holding (or nearest) their middle, grouped into turns."""
    words: list[Word] = [w for s in segments for w in s.words if w.word.strip()]
    if not words:
        return []
    if not spans:
        return [SpeakerSegment("A", words[0].start, words[-1].end, _join(words))]
    starts = np.array([a / rate for a, _ in spans])
    ends = np.array([b / rate for _, b in spans])
    out: list[SpeakerSegment] = []
    current: list[Word] = []
    who = ""
    for w in words:
        mid = (w.start + w.end) / 2
        k = int(np.argmin(np.maximum(starts - mid, 0) + np.maximum(mid - ends, 0)))  # 0 inside a span
        if current and (speakers[k] != who or w.start - current[-1].end > SEGMENT_PAUSE_S):
            out.append(SpeakerSegment(who, current[0].start, current[-1].end, _join(current)))
            current = []
        who = speakers[k]
        current.append(w)
    out.append(SpeakerSegment(who, current[0].start, current[-1].end, _join(current)))
    return out


def _join(words: Sequence[Word]) -> str:
    return "".join(w.word for w in words).strip()


def diarize(encoder: SpeakerEncoder, audio: np.ndarray, regions: Sequence[tuple[float, float]],
            segments: Sequence[Segment], references: dict[str, np.ndarray] | None = None) -> list[SpeakerSegment]:
    """Speaker turns of a transcript (`segments` with words) of `audio` (blocking: run it in a thread).
    `references`: known speakers' embeddings (SpeakerEncoder.embed_utterance), by name."""
    spans = windows(regions)
    if not spans:
        return speaker_segments(segments, [], [])
    emb = encoder.embed_windows(audio, spans)
    labels = cluster(emb)
    names = name_clusters(emb, labels, references or {})
    return speaker_segments(segments, spans, [names[int(k)] for k in labels])
