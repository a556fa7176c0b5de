"""The turn-taking benchmark over the realtime WebSocket (`python -m kombain.loadtest turns`): a paced
microphone session, the utterance and reply trials, one mode's run and N callers at once."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import websockets

from kombain.loadtest.turn_data import (
    CHUNK,
    CHUNK_MS,
    MODES,
    RATE,
    DataSet,
    Playback,
    Stimulus,
    _max_wait_s,
    speech_kind,
)
from kombain.loadtest.turn_report import summarize

# The first chunk the server synthesises is one short clause (at most six words): make it ~2 s long,
# so the sound at ~1 s falls in steadily paced audio, not in the seam before the next chunk.
LONG_REPLY = (
    "Welcome to the customer information service. Before we go on, let me read you the full list of options, "
    "and please take your "
    "time, because there are quite a few of them today. You can check the balance of any account, move "
    "money between your own accounts, pay a bill that is already set up, or add a new person to pay. You "
    "can also report a card as lost or stolen, order a new card, change the limit on a card, or switch "
    "paper statements off. If you are calling about a payment that you do not recognise, we can look at "
    "it together, and if it turns out to be fraud we will block the card and send a new one. Opening "
    "hours are eight in the morning to eight at night on weekdays, and nine to five on Saturdays."
)


class Session:
    """A realtime WebSocket: a paced microphone (silence when idle) and an event log with receive times."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.log: list[tuple[float, dict[str, Any]]] = []
        self._new = asyncio.Event()
        self._queue: deque[tuple[Playback, int]] = deque()
        self.open_turns: set[str] = set()
        self.pending_finals: set[str] = set()  # committed turns whose transcript has not come yet
        self.active: set[str] = set()
        self.created: dict[str, float] = {}
        self.errors: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def open(cls, url: str) -> Session:
        ws = await websockets.connect(url.rstrip("/").replace("http://", "ws://") + "/v1/realtime",
                                      max_size=2**24, open_timeout=20)
        s = cls(ws)
        s._tasks = [asyncio.create_task(s._read()), asyncio.create_task(s._mic())]
        await s.wait(lambda t, e: e["type"] == "session.created", 0, 20)
        return s

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            await self.ws.close()

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    async def update(self, session: dict[str, Any]) -> dict[str, Any]:
        since = len(self.log)
        await self.send({"type": "session.update", "session": session})
        _, e = await self.wait(lambda t, e: e["type"] in ("session.updated", "error"), since, 10)
        if e["type"] == "error":
            raise RuntimeError(f"session.update refused: {e['error']}")
        return e["session"]

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                now = time.monotonic()
                e = json.loads(msg)
                t = e.get("type", "")
                if t == "response.output_audio.delta":
                    e = {"type": t, "response_id": e.get("response_id"),
                         "seconds": len(base64.b64decode(e.get("delta", ""))) / 2 / RATE}
                elif t == "input_audio_buffer.speech_started":
                    self.open_turns.add(e["item_id"])
                elif t == "input_audio_buffer.speech_stopped":
                    self.open_turns.discard(e["item_id"])
                elif t == "input_audio_buffer.committed":
                    self.pending_finals.add(e["item_id"])
                elif t in ("conversation.item.input_audio_transcription.completed",
                           "conversation.item.input_audio_transcription.failed"):
                    self.pending_finals.discard(e["item_id"])
                elif t == "response.created":
                    self.active.add(e["response"]["id"])
                    self.created[e["response"]["id"]] = now
                elif t == "response.done":
                    self.active.discard(e["response"]["id"])
                elif t == "error" and e["error"].get("code") != "response_cancel_not_active":
                    self.errors.append(f"{e['error'].get('code')}: {e['error'].get('message')}")
                self.log.append((now, e))
                self._new.set()
        except websockets.ConnectionClosed as exc:
            self.errors.append(f"socket closed: {exc}")
        self._new.set()

    async def _mic(self) -> None:
        silence = bytes(CHUNK * 2)
        t0 = time.monotonic()
        n = 0
        while True:
            item = self._queue.popleft() if self._queue else None
            chunk = item[0].chunks[item[1]] if item else silence
            now = time.monotonic()
            await self.ws.send(json.dumps({"type": "input_audio_buffer.append",
                                           "audio": base64.b64encode(chunk).decode()}))
            if item:
                item[0].mark(item[1], now)
            n += 1
            delay = t0 + n * CHUNK_MS / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:  # the loop stalled: re-anchor rather than burst
                t0, n = time.monotonic(), 0

    def play(self, chunks: list[bytes]) -> Playback:
        pb = Playback(chunks)
        self._queue.extend((pb, i) for i in range(len(chunks)))
        return pb

    def drop_pending(self) -> None:
        """Forget queued audio (only trailing silence is ever dropped: idle sends silence anyway)."""
        self._queue.clear()

    async def wait(self, pred: Callable[[float, dict[str, Any]], bool], since: int,
                   limit_s: float) -> tuple[float, dict[str, Any]]:
        """The first logged event from index `since` on that matches; TimeoutError after `limit_s` s."""
        i = since
        async with asyncio.timeout(limit_s):
            while True:
                while i < len(self.log):
                    t, e = self.log[i]
                    i += 1
                    if pred(t, e):
                        return t, e
                if self._tasks and self._tasks[0].done():
                    raise ConnectionError("socket closed")
                self._new.clear()
                if i < len(self.log):
                    continue
                await self._new.wait()

    async def wait_or_none(self, pred: Callable[[float, dict[str, Any]], bool], since: int,
                           limit_s: float) -> tuple[float, dict[str, Any]] | None:
        try:
            return await self.wait(pred, since, max(0.0, limit_s))
        except TimeoutError:
            return None

    async def quiet(self, limit_s: float, settle: float = 0.2) -> bool:
        """Wait until no user turn is open or awaits its transcript and no reply is active (cancelling
        replies left over)."""
        deadline = time.monotonic() + limit_s
        cancelled = False
        while self.open_turns or self.active or self.pending_finals:
            if time.monotonic() > deadline:
                if self.active and not cancelled:
                    await self.send({"type": "response.cancel"})
                    cancelled, deadline = True, time.monotonic() + 3
                    continue
                return False
            if self.active and not self.open_turns and not cancelled:
                await self.send({"type": "response.cancel"})
                cancelled = True
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await self._new.wait()
        await asyncio.sleep(settle)
        return True

    def since(self, i: int, type_: str, t_from: float = 0.0) -> list[tuple[float, dict[str, Any]]]:
        return [(t, e) for t, e in self.log[i:] if e["type"] == type_ and t >= t_from]


# --- trials ----------------------------------------------------------------------------------------


async def utterance_trial(s: Session, stim: Stimulus, td: dict[str, Any]) -> dict[str, Any]:
    """Speak a complete or paused utterance and wait for the answer (then cancel it)."""
    ok = await s.quiet(_max_wait_s(td) + 3)
    start = len(s.log)
    silence = [bytes(CHUNK * 2)] * 20  # 2 s
    pb = s.play(stim.chunks + silence)
    rec: dict[str, Any] = {"stimulus": stim.name, "pause_ms": stim.pause_ms, "speech": speech_kind(stim.clip),
                           "quiet_before": ok}
    if stim.kind == "paused":
        pause_from = await pb.sent_at(stim.part1_chunk)
        resume = await pb.sent_at(stim.pause_chunk)
        rec["pause_sent_s"] = [round(pause_from, 3), round(resume, 3)]
    eos = await pb.sent_at(stim.last_voiced)
    got = await s.wait_or_none(lambda t, e: e["type"] == "response.output_audio.delta"
                               and s.created.get(e["response_id"], 0) >= eos, start, _max_wait_s(td) + 3.0)
    if got is None:
        rec["latency_s"] = None
    else:
        t, e = got
        rid = e["response_id"]
        rec["latency_s"] = round(t - eos, 4)
        rec["created_after_eos_s"] = round(s.created[rid] - eos, 4)
        await s.send({"type": "response.cancel"})
        done = await s.wait_or_none(lambda t, e: e["type"] == "response.done" and e["response"]["id"] == rid,
                                    start, 5)
        if done is not None:
            rec["server_timings_ms"] = (done[1]["response"].get("kombain") or {}).get("timings_ms", {})
    s.drop_pending()
    early = [(t, e) for t, e in s.since(start, "response.created") if t < eos]
    commits = [e for t, e in s.since(start, "input_audio_buffer.committed")
               if got is None or t <= s.created.get(got[1]["response_id"], math.inf)]
    finals = [e.get("transcript", "") for _, e in s.since(start, "conversation.item.input_audio_transcription.completed")]
    rec["turns"] = len(commits)
    rec["transcripts"] = finals
    if commits:  # what the partials had published when the last turn ended (the end-of-turn text cue)
        item = commits[-1]["item_id"]
        stop = next((t for t, e in s.since(start, "input_audio_buffer.speech_stopped") if e["item_id"] == item),
                    math.inf)
        rec["partial_at_stop"] = "".join(e.get("delta", "") for t, e in s.since(
            start, "conversation.item.input_audio_transcription.delta") if e["item_id"] == item and t <= stop)
    rec["early_replies"] = len(early)
    if stim.kind == "paused":
        rec["reply_in_pause"] = any(rec["pause_sent_s"][0] <= t <= resume + 0.05 for t, _ in early)
    rec["cut_in"] = bool(early) or len(commits) >= 2
    return rec


async def reply_trial(s: Session, stim: Stimulus, td: dict[str, Any]) -> dict[str, Any]:
    """Play a word, a noise or a whole clip ~1 s into a long reply; see whether and how fast it is cut."""
    wait_s = _max_wait_s(td)
    ok = await s.quiet(wait_s + 3)
    start = len(s.log)
    await s.send({"type": "response.create", "response": {"instructions": LONG_REPLY,
                                                          "metadata": {"kombain_say": "true"}}})
    rec: dict[str, Any] = {"stimulus": stim.name, "kind": stim.kind, "quiet_before": ok}
    first = await s.wait_or_none(lambda t, e: e["type"] == "response.output_audio.delta", start, 10)
    if first is None:
        rec["outcome"] = "no_reply"
        return rec
    rid = first[1]["response_id"]
    await asyncio.sleep(max(0.0, first[0] + 1.0 - time.monotonic()))
    pb = s.play(stim.chunks + [bytes(CHUNK * 2)] * 10)
    onset = await pb.sent_at(stim.first_voiced)
    end = await pb.sent_at(stim.last_voiced)

    def done_of(t: float, e: dict[str, Any]) -> bool:
        return e["type"] == "response.done" and e["response"]["id"] == rid

    # Done (cancelled), or the reply flowing again after the sound: it resumed. While an interruption
    # is being confirmed the server sends nothing, so audio after the sound means it let it go.
    got = await s.wait_or_none(lambda t, e: done_of(t, e) or (
        e["type"] == "response.output_audio.delta" and e["response_id"] == rid and t > end + 0.3),
        start, end - time.monotonic() + wait_s + 2.0)
    audio = [(t, e["seconds"]) for t, e in s.since(start, "response.output_audio.delta") if e["response_id"] == rid]
    deltas = [t for t, _ in audio]
    if got is not None and got[1]["type"] == "response.done":
        r = got[1]["response"]
        reason = (r.get("status_details") or {}).get("reason")
        rec["outcome"] = "cancelled" if r["status"] == "cancelled" else r["status"]
        rec["reason"] = reason
        rec["done_s"] = round(got[0] - onset, 4)
        before = [t for t in deltas if t <= got[0]]
        rec["heard_s"] = round(max(0.0, before[-1] - onset), 4) if before else 0.0
        rec["server_barge_in_ms"] = ((r.get("kombain") or {}).get("timings_ms") or {}).get("barge_in")
    else:
        rec["outcome"] = "resumed" if got is not None else "stalled"
        await s.send({"type": "response.cancel"})
        await s.wait_or_none(done_of, start, 5)
    until = got[0] if got else time.monotonic()
    rec["held_s"] = _held(deltas, onset, until)
    if rec["outcome"] == "resumed":
        rec["heard_gap_s"] = _heard_gap(audio, onset)
    s.drop_pending()
    rec["quiet_after"] = await s.quiet(wait_s + 3, settle=0.0)  # the sound's own turn ends
    rec["turns"] = len(s.since(start, "input_audio_buffer.committed"))
    rec["transcripts"] = [e.get("transcript", "")
                          for _, e in s.since(start, "conversation.item.input_audio_transcription.completed")]
    rec["onset_to_end_s"] = round(end - onset, 3)
    return rec


def _held(deltas: list[float], onset: float, until: float) -> float | None:
    """The longest pause in arriving reply audio that overlaps [onset, until] (~0.1 s: no hold)."""
    gaps = [b - a for a, b in zip(deltas, deltas[1:], strict=False) if b > onset and a <= until]
    return round(max(gaps), 4) if gaps else None


def _heard_gap(audio: list[tuple[float, float]], onset: float) -> float:
    """Silence a player would hear after `onset`: play each delta as it arrives, back to back
    (the server keeps up to 0.5 s ahead, so a short hold is bridged by what is buffered)."""
    end, gap = -math.inf, 0.0
    for t, dur in audio:
        if end > -math.inf and t > end and t > onset:
            gap += t - max(end, onset)
        end = max(end, t) + dur
    return round(gap, 4)


# --- runs ------------------------------------------------------------------------------------------


def _grid_label(ms: int, words: int) -> str:
    return f"min_speech_ms={ms}, min_words={words}"


async def run_mode(url: str, name: str, td: dict[str, Any], ds: DataSet, sets: tuple[str, ...], repeats: int,
                   ext: tuple[int, int], true_per_repeat: int, log: Callable[[str], None]) -> dict[str, Any]:
    t0 = time.monotonic()
    load_before = os.getloadavg()[0]
    s = await Session.open(url)
    ext_fields = {"kombain_interrupt_min_speech_ms": ext[0], "kombain_interrupt_min_words": ext[1]}
    out: dict[str, Any] = {"mode": name, "interrupt": {"min_speech_ms": ext[0], "min_words": ext[1]},
                           "complete": [], "paused": [], "reply": []}
    try:
        got = await s.update({"type": "realtime", "audio": {"input": {"turn_detection": td | ext_fields
                                                                       | {"create_response": True}}}})
        out["session_turn_detection"] = got.get("audio", {}).get("input", {}).get("turn_detection")
        for r in range(repeats):
            if "complete" in sets:
                for stim in ds.complete:
                    out["complete"].append(await utterance_trial(s, stim, td) | {"repeat": r})
            if "paused" in sets:
                for stim in ds.paused_for_repeat(r):
                    out["paused"].append(await utterance_trial(s, stim, td) | {"repeat": r})
            if "interrupt" in sets:
                await s.update({"type": "realtime", "audio": {"input": {"turn_detection": td | ext_fields
                                                                         | {"create_response": False}}}})
                for stim in [*ds.words, *ds.noises, *ds.interrupts_for_repeat(r, true_per_repeat)]:
                    out["reply"].append(await reply_trial(s, stim, td) | {"repeat": r})
                await s.update({"type": "realtime", "audio": {"input": {"turn_detection": td | ext_fields
                                                                         | {"create_response": True}}}})
    finally:
        out["errors"] = s.errors
        await s.close()
    out["seconds"] = round(time.monotonic() - t0, 1)
    # The machine's 1-minute load around the run: other work on the box shows up here (a quiet run
    # with this benchmark alone sits near 1.0 on 2 cores).
    out["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    out["summary"] = summarize(out)
    log(f"  {name} [{_grid_label(*ext)}]: {out['seconds']:.0f} s, load {out['loadavg_1m']}")
    return out


async def run_callers(url: str, n: int, name: str, ds: DataSet, sets: tuple[str, ...], repeats: int,
                      true_per_repeat: int, log: Callable[[str], None]) -> dict[str, Any]:
    """`n` sessions of one mode at once, each playing the whole data set (starts staggered by 0.37 s so
    their turns do not end in lockstep); their trials pooled into one run labelled `name xN`."""
    async def one(i: int) -> dict[str, Any]:
        await asyncio.sleep(0.37 * i)
        return await run_mode(url, name, MODES[name], ds, sets, repeats, (0, 0), true_per_repeat,
                              lambda msg: None)

    t0 = time.monotonic()
    load_before = os.getloadavg()[0]
    parts = await asyncio.gather(*[one(i) for i in range(n)])
    out: dict[str, Any] = {"mode": f"{name} x{n}", "callers": n, "interrupt": parts[0]["interrupt"],
                           "session_turn_detection": parts[0].get("session_turn_detection"),
                           "complete": [r | {"caller": i} for i, p in enumerate(parts) for r in p["complete"]],
                           "paused": [r | {"caller": i} for i, p in enumerate(parts) for r in p["paused"]],
                           "reply": [r | {"caller": i} for i, p in enumerate(parts) for r in p["reply"]],
                           "errors": [e for p in parts for e in p["errors"]],
                           "seconds": round(time.monotonic() - t0, 1),
                           "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    out["summary"] = summarize(out)
    log(f"  {out['mode']}: {out['seconds']:.0f} s, load {out['loadavg_1m']}")
    return out
