"""`python -m kombain.loadtest conversation --transport sip|audiosocket`: N PBX calls at once.

The calls are `PhoneSession`s (loadtest/conversation_phone.py: the same clips, turns, every 2nd
reply interrupted 0.8 s after its first audio, the same `turn`, `reply_gap` and server stages)
with a `SipCaller` (clients/sip_caller.py: INVITE, 20 ms mu-law RTP at real time, BYE) or an
`AudioSocketCaller` (TCP, 20 ms 8 kHz slin frames) as the phone.

Neither protocol has a clear or flush message: the server just stops sending reply audio. So here
  barge_in       first voiced frame of the interruption sent -> last voiced reply packet received
                 (0 when none arrived after it): when reply audio stopped arriving
  barge_in_hold  that frame sent -> the last reply packet of any kind received: when the server
                 stopped its pacer (it holds the reply at the first voiced frame it hears)
The reply is watched until the interruption's last voiced frame has been said (its own reply comes
>= 0.5 s later, after the server's silence wait), at most `CLEAR_WITHIN_S` (3 s). If reply packets still arrive within `STOP_GAP_S` of that end, the
reply did not stop (`no_clear`); if none arrived after the onset and nothing was left to play, the
reply was over (`reply_over`, not a barge-in). A reply that ended by itself soon after the onset
would be counted as stopped; the interrupted clip is one of the three longest, so ~2 s of its echo
are still to come at the onset.

SIP packet counters (summed over the calls): sent and dropped by the caller's impairment
(`--loss`, `--jitter-ms`: netem-like, seeded per call), received, `lost` (sequence gaps in the
server's stream), out of order, and `reply_gaps`: timestamp jumps of more than one frame between
consecutive sequence numbers, i.e. gaps the server left in its own stream. (kombain's RTP sender
does not advance its timestamp while it has nothing to send, so a stall of its pacer shows up in
arrival times, the `reply_gap` stage, not here.) The server's own counts come from
`kombain_rtp_packets_total{kind}` (received, lost, late) before and after the run.
AudioSocket runs over TCP: no loss, no sequence numbers.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from kombain.clients.phone_callers import FRAME, RATE, AudioSocketCaller
from kombain.clients.sip_caller import SipCaller
from kombain.loadtest.conversation_phone import (
    CLEAR_WITHIN_S,
    REPLY_PEAK,
    VOICED_RMS,
    PhoneSession,
    _SendLog,
    run_conversation_phone,
)

STOP_GAP_S = 0.3  # no reply packet for this long: the server has stopped sending
PBX = ("sip", "audiosocket")


class _Sip(_SendLog, SipCaller):
    pass


class _AudioSocket(_SendLog, AudioSocketCaller):
    pass


class PbxSession(PhoneSession):
    """A `PhoneSession` whose barge-in is timed by when reply audio stopped arriving."""

    async def _barge_in(self, pcm: np.ndarray) -> None:
        c = self.caller
        sent = len(self.log)
        self.counts["barge_ins"] += 1
        self._pending_said = asyncio.ensure_future(self._say(pcm))
        if not await self._until(lambda: len(self.log) > sent, len(pcm) / RATE + 1):
            self.errors.append("interruption had no voiced frame")
            return
        onset = self.log[sent]
        to_play = c.playback.play_end - onset  # reply audio the caller still had to play at the onset
        end = onset + min(CLEAR_WITHIN_S, _voiced_span_s(pcm) + STOP_GAP_S)
        await self._until(lambda: time.monotonic() >= end, end - time.monotonic() + 1)
        # The reply playing at the onset ends at its first silence of STOP_GAP_S (the server sends
        # nothing between replies); packets after that are the next reply, the answer to a short
        # interruption whose turn ended on the server before the window closed, not this one going on.
        window = [(t, a) for t, a in c.heard.audio if onset <= t <= end]
        previous = onset
        for i, (t, _) in enumerate(window):
            if t - previous >= STOP_GAP_S:
                window = window[:i]
                break
            previous = t
        arrived = [t for t, _ in window]
        voiced = [t for t, a in window if len(a) and int(np.abs(a.astype(np.int32)).max()) > REPLY_PEAK]
        if not arrived and to_play <= 0:  # nothing was playing: the reply was over, or had run dry
            self.counts["barge_ins"] -= 1
            self.counts["reply_over"] += 1
            self._skip_turn = True
        elif arrived and end - arrived[-1] < STOP_GAP_S:
            self.counts["no_clear"] += 1
            self._skip_turn = True  # the old reply may still be arriving: the next `turn` would be wrong
            self.errors.append(f"reply audio still arriving {end - onset:.1f} s after the interruption at reply "
                               f"{self.counts['replies']} ({len(arrived)} packets since the onset)")
        else:
            self.samples["barge_in"].append(voiced[-1] - onset if voiced else 0.0)
            self.samples["barge_in_hold"].append(arrived[-1] - onset if arrived else 0.0)


def _voiced_span_s(pcm: np.ndarray) -> float:
    """First to last voiced frame of a clip: the server's reply to it cannot start before 0.5 s
    (its silence wait) after the last one, however much quiet the clip has at its end."""
    frames = pcm[: len(pcm) // FRAME * FRAME].reshape(-1, FRAME).astype(np.float32)
    voiced = np.nonzero(np.sqrt((frames**2).mean(axis=1)) > VOICED_RMS)[0]
    return float(voiced[-1] - voiced[0] + 1) * FRAME / RATE if len(voiced) else len(pcm) / RATE


def _rtp_counters(url: str) -> dict[str, float]:
    """kombain_rtp_packets_total by kind (the server adds a call's counts when it ends)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url.rstrip("/") + "/metrics", timeout=10).text
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "kombain_rtp_packets_total":
                out[s.labels.get("kind", "")] = s.value
    return out


async def run_conversation_pbx(url: str, transport: str, sessions: int, audio_dir: Path, interrupt_every: int = 2,
                               rounds: int = 1, sampler: Any = None, *, sip: tuple[str, int] = ("127.0.0.1", 5060),
                               audiosocket: tuple[str, int] = ("127.0.0.1", 9092), loss: float = 0.0,
                               jitter_ms: float = 0.0) -> dict[str, Any]:
    """`sessions` SIP or AudioSocket calls to the server at `url` (its listeners at `sip` / `audiosocket`)."""
    if transport not in PBX:
        raise ValueError(f"transport {transport!r} is not one of {PBX}")
    callers: list[Any] = []

    def make(i: int, plan: list[np.ndarray]) -> PhoneSession:
        caller: Any
        if transport == "sip":
            caller = _Sip(*sip, loss=loss, jitter_ms=jitter_ms, seed=i)
        else:
            caller = _AudioSocket(*audiosocket)
        callers.append(caller)
        return PbxSession(url, transport, plan, interrupt_every, caller=caller)

    before = await asyncio.to_thread(_rtp_counters, url) if transport == "sip" else {}
    result = await run_conversation_phone(url, transport, sessions, audio_dir, interrupt_every, rounds, sampler,
                                          make_session=make)
    if transport == "sip":
        after = await asyncio.to_thread(_rtp_counters, url)
        packets: dict[str, Any] = {"loss": loss, "jitter_ms": jitter_ms}
        for c in callers:
            for k, v in c.stats().items():
                packets[k] = round(packets.get(k, 0) + v, 3)
        packets["server"] = {k: after.get(k, 0) - before.get(k, 0) for k in ("received", "lost", "late", "sent")}
        result["packets"] = packets
    return result
