"""Live speaker labels: which of a session's speakers said each turn, decided turn by turn."""

from __future__ import annotations

import string

import numpy as np

from kombain.streaming.diarize import CLUSTER_DISTANCE


class SpeakerTracker:
    """A session's speakers, `A`, `B`, ... in order of first appearance. Each turn's voice
    embedding joins the speaker whose running centroid is most similar, if at least
    `min_similarity` (the file diarizer's clustering threshold), else it starts a new speaker.
    A label once given never changes: a later turn cannot relabel an earlier one."""

    def __init__(self, min_similarity: float = 1.0 - CLUSTER_DISTANCE, max_speakers: int = 26) -> None:
        self.min_similarity = min_similarity
        self.max_speakers = max_speakers
        self._sums: list[np.ndarray] = []  # sum of each speaker's turn embeddings

    def assign(self, embedding: np.ndarray) -> str:
        e = embedding / max(float(np.linalg.norm(embedding)), 1e-9)
        best, similarity = -1, -1.0
        for k, total in enumerate(self._sums):
            s = float(total @ e) / max(float(np.linalg.norm(total)), 1e-9)
            if s > similarity:
                best, similarity = k, s
        if best < 0 or (similarity < self.min_similarity and len(self._sums) < self.max_speakers):
            self._sums.append(e.astype(np.float64))
            return string.ascii_uppercase[len(self._sums) - 1]
        self._sums[best] = self._sums[best] + e
        return string.ascii_uppercase[best]

    @property
    def speakers(self) -> int:
        return len(self._sums)
