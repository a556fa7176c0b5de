"""Media that stops counts as silence: the silence a call is owed when its caller's audio stops.

Silence suppression on a SIP trunk, Opus DTX and clients that send only while someone speaks all
leave gaps in the audio where a microphone would have sent silence. The VAD only sees what
arrives, so without this a turn would stay open until the caller spoke again. `MediaGap` compares
the wall clock with the audio clock (seconds of audio received since the first): once the audio
falls more than `gap_s` behind, the difference is owed as silence. A caller that sends ahead of
real time (a file streamed fast) is never owed anything until the wall clock catches up with it,
and gaps between turns are forgiven (only a turn left open is waiting on silence). Pure (the clock
is passed in); `Call` feeds it and pushes the silence.
"""

from __future__ import annotations

GAP_S = 0.4  # audio this far behind the wall clock is missing, not late (a jitter buffer holds 0.1-0.2 s)


class MediaGap:
    def __init__(self, gap_s: float = GAP_S) -> None:
        self.gap_s = gap_s
        self._anchor: float | None = None  # wall time of the first audio
        self._audio = 0.0  # seconds of audio received (or owed and given) since the anchor

    def audio(self, seconds: float, now: float) -> None:
        """`seconds` of audio arrived (or were filled in) at `now`."""
        if self._anchor is None:
            self._anchor = now
        self._audio += seconds

    def idle(self, now: float) -> None:
        """No turn is open: a gap now ends nothing, so it is forgiven (a client that sends nothing
        between turns must not be owed minutes of silence in the middle of its next one)."""
        if self._anchor is not None:
            self._audio = max(self._audio, now - self._anchor)

    def owed(self, now: float) -> float:
        """Seconds of silence missing at `now` (0 while the audio keeps up within `gap_s`)."""
        if self._anchor is None:
            return 0.0
        lag = (now - self._anchor) - self._audio
        return lag if lag >= self.gap_s else 0.0
