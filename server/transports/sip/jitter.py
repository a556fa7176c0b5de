"""Receive jitter buffer for 20 ms G.711 RTP frames, and packet-loss concealment for G.711, sans I/O.

The I/O loop pushes every RTP packet as it arrives and pops one frame every 20 ms. Packets are
ordered and de-duplicated by sequence number (16-bit, unwrapped); their RTP timestamp says which
20 ms slot of the sender's timeline they fill, so a gap in timestamps (silence suppression, an
RFC 4733 event in place of audio, a lost packet) plays out as missing frames (None), which the
caller conceals. Playout starts once `target_ms` is buffered and then follows the sender's clock:
a frame that arrives after its slot was played is late and dropped. Where the two clocks part
(a stall, clock drift, a sender that restarts its timestamps) the buffer resyncs: past `max_ms`
it keeps the newest `target_ms`; when in-order packets keep arriving late it plays from them
again; a surplus of 2+ frames above the target held for a second is trimmed a frame at a time.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace
from typing import Final

import numpy as np

from kombain.server.transports.sip.rtp import RtpPacket
from kombain.streaming.audio import alaw_decode, alaw_encode, mulaw_decode, mulaw_encode

__all__ = ["JitterBuffer", "JitterStats", "conceal"]

_MAX_JUMP: Final = 100  # a larger sequence jump is a new stream once the next packet follows it
_SEQ_HISTORY: Final = 128  # sequence numbers remembered for duplicates (> _MAX_JUMP: all in reach)
_LATE_RESYNC: Final = 5  # in-order late packets within _LATE_WINDOW slots: playout ran ahead, resync
_LATE_WINDOW: Final = 50
_SHRINK_WINDOW: Final = 50  # pops (1 s) over which a surplus above the target must persist


@dataclass
class JitterStats:
    """Counters since the buffer was made (they survive stream resets)."""

    received: int = 0  # packets pushed, duplicates and late ones included
    duplicates: int = 0  # a sequence number already received
    late: int = 0  # arrived after its slot was played
    lost: int = 0  # sequence numbers never received (RFC 3550 A.3: expected - received)
    reordered: int = 0  # arrived after a higher sequence number
    concealed: int = 0  # pops that returned None while playing (lost, late or not sent)
    dropped: int = 0  # frames discarded unplayed: overflow, latency trimming, a reset or restart
    resets: int = 0  # new streams: SSRC change, or a confirmed sequence jump
    resyncs: int = 0  # playout point moved within a stream: overflow, late packets, timestamps jumped


def _delta16(a: int, b: int) -> int:
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def _delta32(a: int, b: int) -> int:
    return ((a - b + 0x80000000) & 0xFFFFFFFF) - 0x80000000


class JitterBuffer:
    """Reorders one RTP stream into 20 ms frames for a fixed-rate pop(); bounded by `max_ms`."""

    def __init__(self, *, frame_samples: int = 160, target_ms: int = 60, max_ms: int = 400,
                 rate: int = 8000, payload_type: int | None = None) -> None:
        if frame_samples <= 0 or rate <= 0 or target_ms <= 0:
            raise ValueError("frame_samples, rate and target_ms must be positive")
        if max_ms <= target_ms:
            raise ValueError("max_ms must be larger than target_ms")
        frame_ms = frame_samples * 1000 / rate
        self.frame_samples = frame_samples  # also the frame's size in bytes: G.711 is a byte a sample
        self.target_frames = max(1, math.ceil(target_ms / frame_ms - 1e-9))
        self.max_frames = max(self.target_frames + 1, int(max_ms / frame_ms + 1e-9))
        # When set, packets of other payload types (telephone-event, comfort noise) count for the
        # sequence accounting but carry no audio: their slots play out as missing frames.
        self.payload_type = payload_type
        self._stats = JitterStats()
        self._lost_before = 0  # lost in earlier streams
        self._ssrc: int | None = None
        self._probe: RtpPacket | None = None  # a packet that jumped; confirmed by its successor
        self._clear(None)

    def _clear(self, first: RtpPacket | None) -> None:
        # Sequence state: extended (unwrapped) numbers; `first` is accepted right after.
        seq = first.sequence if first else 0
        self._hi = seq - 1
        self._lo = seq
        self._unique = 0
        self._seen: set[int] = set()
        # Timeline: slot n covers timestamps origin + n * frame_samples (rounded).
        ts = first.timestamp if first else 0
        self._ts_ref = ts
        self._origin = ts
        self._frames: dict[int, bytes] = {}
        self._cursor = 0  # the slot the next pop plays
        self._fixed = False  # False until something is played: a reordered earlier frame may still lead
        self._playing = False
        self._late_marks: deque[int] = deque()  # playout slots at which in-order packets were late
        self._window = 0  # pops in the current shrink window
        self._min_span = 0  # the least buffered span (slots) seen at a pop in that window

    def _stream_lost(self) -> int:
        return max(0, self._hi - self._lo + 1 - self._unique) if self._ssrc is not None else 0

    def _new_stream(self, pkt: RtpPacket) -> None:
        if self._ssrc is not None:
            self._lost_before += self._stream_lost()
            self._stats.resets += 1
            self._stats.dropped += len(self._frames)
        self._ssrc = pkt.ssrc
        self._probe = None
        self._clear(pkt)

    def reset(self) -> None:
        """Forget the stream (the counters stay): the next packet starts a new one."""
        if self._ssrc is not None:
            self._lost_before += self._stream_lost()
            self._stats.dropped += len(self._frames)
        self._ssrc = None
        self._probe = None
        self._clear(None)

    @property
    def ready(self) -> bool:
        """True while playing: `target_ms` was buffered and each pop() advances one frame."""
        return self._playing

    @property
    def stats(self) -> JitterStats:
        """A snapshot of the counters."""
        return replace(self._stats, lost=self._lost_before + self._stream_lost())

    def __len__(self) -> int:
        """Frames held."""
        return len(self._frames)

    def push(self, pkt: RtpPacket) -> None:
        """Take one received packet (any order; duplicates, late packets and overflow are handled)."""
        self._stats.received += 1
        if self._ssrc is None or pkt.ssrc != self._ssrc:
            self._new_stream(pkt)
        elif abs(_delta16(pkt.sequence, self._hi & 0xFFFF)) > _MAX_JUMP:
            # As RFC 3550 A.1: a jump is a restarted stream only if the next packet follows it;
            # a lone stray (a very late or misdirected packet) must not flush the buffer.
            probe = self._probe
            if probe is None or pkt.sequence != (probe.sequence + 1) & 0xFFFF:
                self._probe = pkt
                return
            self._new_stream(probe)
            self._accept(probe)
        self._accept(pkt)

    def _accept(self, pkt: RtpPacket) -> None:
        stats = self._stats
        seq = self._hi + _delta16(pkt.sequence, self._hi & 0xFFFF)
        if seq in self._seen:
            stats.duplicates += 1
            return
        self._seen.add(seq)
        self._unique += 1
        self._lo = min(self._lo, seq)
        in_order = seq > self._hi
        if in_order:
            self._hi = seq
            if len(self._seen) > 2 * _SEQ_HISTORY:
                self._seen = {s for s in self._seen if s > seq - _SEQ_HISTORY}
        else:
            stats.reordered += 1
        if not pkt.payload or (self.payload_type is not None and pkt.payload_type != self.payload_type):
            return
        ext_ts = self._ts_ref + _delta32(pkt.timestamp, self._ts_ref & 0xFFFFFFFF)
        if in_order:
            self._ts_ref = ext_ts
        self._place(ext_ts, pkt.payload, in_order)

    def _place(self, ext_ts: int, payload: bytes, in_order: bool) -> None:
        stats, size = self._stats, self.frame_samples
        slot = (ext_ts - self._origin + size // 2) // size
        # A packet of several 20 ms frames fills several slots; other sizes stay whole in one.
        if len(payload) > size and len(payload) % size == 0:
            chunks = [payload[i:i + size] for i in range(0, len(payload), size)]
        else:
            chunks = [payload]
        last = slot + len(chunks) - 1
        if self._fixed and last < self._cursor:
            if in_order and self._cursor - last > self.max_frames:
                # The sender's timeline jumped back (timestamps restarted, not sequence numbers):
                # what is buffered belongs to the old timeline.
                stats.dropped += len(self._frames)
                stats.resyncs += 1
                self._frames.clear()
                self._late_marks.clear()
                self._origin = ext_ts
                slot, self._cursor, self._fixed, self._playing = 0, 0, False, False
            elif in_order and self._late_ahead():
                # Packets keep coming in order but after their slots: the playout point ran ahead
                # (a slower sender clock, a stall); play from here again, keeping what is ahead.
                stats.resyncs += 1
                self._cursor, self._playing = slot, False
            else:
                stats.late += 1
                return
        if not self._fixed and (not self._frames or slot < self._cursor):
            self._cursor = slot  # nothing played yet: start at the earliest frame
        for i, chunk in enumerate(chunks):
            if slot + i >= self._cursor:
                self._frames.setdefault(slot + i, chunk)  # a second packet for one slot: keep the first
        top = max(self._frames)
        if top - self._cursor + 1 > self.max_frames:
            # Overflow: keep only the newest target_ms and wait for it to fill again.
            anchor = top - self.target_frames + 1
            old = [k for k in self._frames if k < anchor]
            for k in old:
                del self._frames[k]
            stats.dropped += len(old)
            stats.resyncs += 1
            self._cursor, self._fixed, self._playing = min(self._frames), True, False
        if not self._playing and top - self._cursor + 1 >= self.target_frames:
            self._playing = True
            self._window, self._min_span = 0, self.max_frames

    def _late_ahead(self) -> bool:
        marks = self._late_marks
        marks.append(self._cursor)
        while marks[0] < self._cursor - _LATE_WINDOW:
            marks.popleft()
        if len(marks) < _LATE_RESYNC:
            return False
        marks.clear()
        return True

    def pop(self) -> bytes | None:
        """The next frame's payload, or None: still buffering (no advance) or the frame is missing."""
        if not self._playing:
            return None
        # Shrink: a surplus of 2+ frames above the target for a whole second (after a stall, or a
        # faster sender clock) is latency nobody needs; skip one slot to walk it back gently.
        span = max(self._frames) - self._cursor + 1 if self._frames else 0
        self._min_span = min(self._min_span, span)
        self._window += 1
        if self._window >= _SHRINK_WINDOW:
            if self._min_span >= self.target_frames + 2:
                self._stats.dropped += self._frames.pop(self._cursor, None) is not None
                self._cursor += 1
            self._window, self._min_span = 0, self.max_frames
        frame = self._frames.pop(self._cursor, None)
        self._cursor += 1
        self._fixed = True
        if frame is None:
            self._stats.concealed += 1
        return frame


_SILENCE: Final = {"mulaw": 0xFF, "alaw": 0xD5}  # the codes for 0 (mu-law) and +8 (A-law, no 0)
_CODECS: Final = {"mulaw": "mulaw", "ulaw": "mulaw", "pcmu": "mulaw", "alaw": "alaw", "pcma": "alaw"}


def conceal(previous: bytes | None, frame_bytes: int, codec: str) -> bytes:
    """A G.711 frame for a missing one: `previous` at half amplitude, or silence when there is none.

    Feeding each concealed frame back as `previous` fades a longer gap out by 6 dB a frame.
    """
    kind = _CODECS.get(codec.lower())
    if kind is None:
        raise ValueError(f"conceal() handles G.711 only (mulaw, alaw), not {codec!r}")
    if not previous:
        return bytes([_SILENCE[kind]]) * frame_bytes
    pcm = mulaw_decode(previous) if kind == "mulaw" else alaw_decode(previous)
    pcm = np.fix(np.resize(pcm, frame_bytes) * 0.5).astype(np.int32)  # repeats or trims to size
    return mulaw_encode(pcm) if kind == "mulaw" else alaw_encode(pcm)
