"""The turn-taking benchmark over WebRTC, Twilio Media Streams and SIP/RTP (`python -m kombain.loadtest
turns --transport webrtc twilio sip`): the complete and paused utterances of the data set, said by a
caller on a real call, at 1x with real silence in between (the line never stops sending).

  webrtc  aiortc (`clients/webrtc_client.py`), Opus both ways, the session's turn detection sent
          with the offer; ICE on 127.0.0.1 only. The data channel shows `response.created` and
          `input_audio_buffer.committed`, so cut-ins are judged as over the WebSocket
  twilio  Twilio Media Streams (`clients/phone_callers.py`): 20 ms 8 kHz mu-law `media` frames over
          the WebSocket
  sip     a real SIP dialog (`clients/sip_caller.py`: INVITE, ACK, BYE) and 20 ms PCMU RTP

Phone calls cannot set turn detection per call: the server runs with the mode as its default
(KOMBAIN_TURN_DETECTION, KOMBAIN_VAD_SILENCE_MS, KOMBAIN_TURN_EAGERNESS; see `server_env`).

Client clock, per frame sent (20 ms): the frame that holds the stimulus's last voiced 10 ms is its
end of speech (`eos`). Reply audio counts when it is not silent (a phone chunk with a sample above
300/32768, a WebRTC frame above -46 dBFS RMS). `heard_outcome` turns these times into
  latency_s  eos -> the first reply audio of the answer: over WebRTC the first after a
             `response.created` at or after eos; on a phone line the first after eos that follows
             at least `GAP_S` of no reply audio (a reply already under way at eos is a cut-in's)
  cut_in     a reply created (WebRTC) or reply audio heard (phone) between the first voiced frame and
             eos, or (WebRTC) the utterance committed as two or more turns
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from typing import Any

import numpy as np

from kombain.loadtest.turn_data import RATE, DataSet, Playback, Stimulus, _max_wait_s, speech_kind
from kombain.loadtest.turn_report import summarize

LINES = ("webrtc", "twilio", "sip")
PHONE_LINES = ("twilio", "sip")
GAP_S = 0.3  # reply audio after this much quiet is a new reply
QUIET_S = 1.0  # no reply audio this long (and nothing left to play): the line is quiet
REPLY_PEAK = 300  # phone: a received chunk with a sample above this is reply speech
WEBRTC_RMS = 0.005  # WebRTC: a received 20 ms frame above this RMS is reply speech


def heard_outcome(eos: float, onset: float, voiced: list[float], *, created: list[float] | None = None,
                  commits: list[float] | None = None, pause: tuple[float, float] | None = None,
                  gap_s: float = GAP_S) -> dict[str, Any]:
    """Latency as heard and cut-in for one utterance, from client times: `onset` and `eos` (first and
    last voiced frame sent), `voiced` (sorted receive times of non-silent reply audio), and where the
    protocol shows them, `created` (replies started) and `commits` (user turns committed). `pause`:
    the send times of a paused utterance's last voiced frame before and first after the pause."""
    first: float | None = None
    later: list[float] = []
    if created is not None:
        early = [t for t in created if onset <= t < eos]
        later = [t for t in created if t >= eos]
        if later:
            first = next((t for t in voiced if t >= later[0]), None)
    else:
        early = [t for t in voiced if onset <= t < eos]
        prev: float | None = None
        for t in voiced:
            if t >= eos and (prev is None or t - prev > gap_s):
                first = t
                break
            prev = t
    rec: dict[str, Any] = {"latency_s": None if first is None else round(first - eos, 4),
                           "early_replies": len(early)}
    turns = None
    if commits is not None:
        until = later[0] if later else first if first is not None else float("inf")
        turns = sum(1 for t in commits if onset <= t <= until)
        rec["turns"] = turns
    if pause is not None:
        rec["reply_in_pause"] = any(pause[0] <= t <= pause[1] + 0.05 for t in early)
    rec["cut_in"] = bool(early) or (turns or 0) >= 2
    return rec


def bursts(voiced: list[float], since: float, until: float, origin: float, gap_s: float = GAP_S) -> list[list[float]]:
    """Runs of reply audio between `since` and `until` (no gap over `gap_s` inside one), as
    [start, end] seconds from `origin`."""
    out: list[list[float]] = []
    for t in voiced:
        if not since <= t <= until:
            continue
        if out and t - (out[-1][1] + origin) <= gap_s:
            out[-1][1] = round(t - origin, 3)
        else:
            out.append([round(t - origin, 3), round(t - origin, 3)])
    return out


def server_env(td: dict[str, Any]) -> dict[str, str]:
    """The server defaults that give phone calls the turn detection `td`."""
    if td["type"] == "semantic_vad":
        return {"KOMBAIN_TURN_DETECTION": "semantic_vad", "KOMBAIN_TURN_EAGERNESS": td.get("eagerness", "auto")}
    return {"KOMBAIN_TURN_DETECTION": "server_vad", "KOMBAIN_VAD_SILENCE_MS": str(td.get("silence_duration_ms", 500))}


class _TimedFrames:
    """Mixin for a `PhoneCaller`: the send time of each frame of what `play` queued."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._expect: deque[tuple[Playback, int, np.ndarray]] = deque()

    def play(self, pcm: np.ndarray) -> Playback:
        before = len(self._queue)  # type: ignore[attr-defined]
        self.say(pcm)  # type: ignore[attr-defined]
        frames = [f for f in list(self._queue)[before:] if len(f) > 1]  # type: ignore[attr-defined]
        pb = Playback([b""] * len(frames))
        self._expect.extend((pb, i, f) for i, f in enumerate(frames))
        return pb

    async def _send_audio(self, frame: np.ndarray) -> None:
        now = time.monotonic()
        await super()._send_audio(frame)  # type: ignore[misc]
        if self._expect and self._expect[0][2] is frame:
            pb, i, _ = self._expect.popleft()
            pb.mark(i, now)


class Line:
    """One call, as the trials see it: `play` a stimulus, read reply times, wait for quiet."""

    transport = ""
    frame_s = 0.02
    closed = False

    def __init__(self) -> None:
        self.errors: list[str] = []

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def play(self, stim: Stimulus) -> Playback:
        raise NotImplementedError

    def voiced(self) -> list[float]:
        raise NotImplementedError

    def created(self) -> list[float] | None:
        return None

    def commits(self) -> list[float] | None:
        return None

    async def settle(self, limit_s: float) -> bool:
        raise NotImplementedError

    async def answered(self, rec: dict[str, Any]) -> None:
        """The answer's first audio has come (or not): cut it short where the protocol can."""


class PhoneLine(Line):
    """A Twilio Media Streams or SIP call (8 kHz, 20 ms frames)."""

    def __init__(self, transport: str, url: str, sip: tuple[str, int]) -> None:
        super().__init__()
        from kombain.clients.phone_callers import TwilioCaller
        from kombain.clients.sip_caller import SipCaller
        from kombain.loadtest.conversation_phone import endpoint

        class _Twilio(_TimedFrames, TwilioCaller):
            pass

        class _Sip(_TimedFrames, SipCaller):
            pass

        self.transport = transport
        self.caller: Any = _Twilio(endpoint(url, "twilio")) if transport == "twilio" else _Sip(*sip)
        self._seen = 0
        self._voiced: list[float] = []

    @property
    def closed(self) -> bool:  # type: ignore[override]
        return bool(self.caller.closed.is_set())

    async def open(self) -> None:
        await self.caller.connect()

    async def close(self) -> None:
        await self.caller.stop()

    def play(self, stim: Stimulus) -> Playback:
        import soxr

        pcm = (np.clip(soxr.resample(stim.signal, RATE, 8000), -1, 1) * 32767).astype(np.int16)
        pb: Playback = self.caller.play(pcm)
        return pb

    def voiced(self) -> list[float]:
        audio = self.caller.heard.audio
        while self._seen < len(audio):
            t, pcm = audio[self._seen]
            self._seen += 1
            if len(pcm) and int(np.abs(pcm.astype(np.int32)).max()) > REPLY_PEAK:
                self._voiced.append(t)
        return self._voiced

    async def settle(self, limit_s: float) -> bool:
        """No reply audio for QUIET_S and none left to play (a phone call cannot cancel a reply, so
        a whole echo reply is waited out: at least 15 s)."""
        end = time.monotonic() + max(limit_s, 15.0)
        while time.monotonic() < end and not self.closed:
            audio = self.caller.heard.audio
            last = audio[-1][0] if audio else 0.0
            now = time.monotonic()
            if now - last >= QUIET_S and self.caller.playback.play_end <= now:
                return True
            await asyncio.sleep(0.05)
        return False


class WebRTCLine(Line):
    """A WebRTC call with the mode's turn detection in the offer's session."""

    transport = "webrtc"

    def __init__(self, url: str, td: dict[str, Any]) -> None:
        super().__init__()
        from kombain.clients.webrtc_client import FileMicrophone, WebRTCCaller

        class _Mic(FileMicrophone):
            def __init__(self) -> None:
                super().__init__()
                self.expect: deque[tuple[Playback, int, np.ndarray]] = deque()

            def play_timed(self, samples: np.ndarray) -> Playback:
                before = len(self._queue)
                self.play(samples, RATE)
                frames = list(self._queue)[before:]
                pb = Playback([b""] * len(frames))
                self.expect.extend((pb, i, f) for i, f in enumerate(frames))
                return pb

            def _take(self, n: int) -> np.ndarray:
                head = self._queue[0] if self._queue else None
                out = super()._take(n)
                if head is not None and self.expect and self.expect[0][2] is head:
                    pb, i, _ = self.expect.popleft()
                    pb.mark(i, time.monotonic())
                return out

        session = {"type": "realtime", "audio": {"input": {"turn_detection": td | {
            "kombain_interrupt_min_speech_ms": 0, "kombain_interrupt_min_words": 0, "create_response": True}}}}
        self.caller = WebRTCCaller(url, hosts=("127.0.0.1",), session=session)
        self.mic = _Mic()
        self.caller.pc.getSenders()[0].replaceTrack(self.mic)
        self.caller.mic = self.mic
        self._seen = 0
        self._voiced: list[float] = []

    def _abs(self, t: float) -> float:
        return self.caller._t0 + t

    def _times(self, type_: str) -> list[float]:
        return [self._abs(e.t) for e in self.caller.result.of(type_)]

    async def open(self) -> None:
        await self.caller.connect()

    async def close(self) -> None:
        self.errors += [f"{(e.event.get('error') or {}).get('code')}: {(e.event.get('error') or {}).get('message')}"
                        for e in self.caller.result.of("error")
                        if (e.event.get("error") or {}).get("code") != "response_cancel_not_active"]
        await self.caller.close()

    def play(self, stim: Stimulus) -> Playback:
        return self.mic.play_timed(stim.signal)

    def voiced(self) -> list[float]:
        from kombain.clients.webrtc_client import FRAME

        r = self.caller.result
        n = min(len(r.frame_times), len(r.audio) // 2 // FRAME)
        if self._seen < n:
            pcm = np.frombuffer(bytes(r.audio[self._seen * FRAME * 2:n * FRAME * 2]), np.int16)
            rms = np.sqrt(np.mean((pcm.astype(np.float32) / 32768).reshape(-1, FRAME) ** 2, axis=1))
            self._voiced += [self._abs(r.frame_times[self._seen + k]) for k in np.flatnonzero(rms > WEBRTC_RMS)]
            self._seen = n
        return self._voiced

    def created(self) -> list[float]:
        return self._times("response.created")

    def commits(self) -> list[float]:
        return self._times("input_audio_buffer.committed")

    def _open_state(self) -> tuple[int, int, int]:
        r = self.caller.result

        def ids(type_: str, key: str) -> set[str]:
            return {e.event[key] if key != "response" else e.event["response"]["id"] for e in r.of(type_)}

        turns = len(ids("input_audio_buffer.speech_started", "item_id") - ids("input_audio_buffer.speech_stopped",
                                                                            "item_id"))
        active = len(ids("response.created", "response") - ids("response.done", "response"))
        finals = ids("conversation.item.input_audio_transcription.completed", "item_id") | ids(
            "conversation.item.input_audio_transcription.failed", "item_id")
        pending = len(ids("input_audio_buffer.committed", "item_id") - finals)
        return turns, active, pending

    async def settle(self, limit_s: float) -> bool:
        """As the WebSocket session's `quiet`: no open turn, no reply, no transcript awaited."""
        end = time.monotonic() + limit_s
        cancelled = False
        while any(state := self._open_state()):
            turns, active, _ = state
            if time.monotonic() > end:
                if active and not cancelled:
                    self.caller.send({"type": "response.cancel"})
                    cancelled, end = True, time.monotonic() + 3
                    continue
                return False
            if active and not turns and not cancelled:
                self.caller.send({"type": "response.cancel"})
                cancelled = True
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        return True

    async def answered(self, rec: dict[str, Any]) -> None:
        if rec["latency_s"] is None:
            return
        r = self.caller.result
        rid = next((e.event["response"]["id"] for e in reversed(r.of("response.created"))), None)
        self.caller.send({"type": "response.cancel"})
        end = time.monotonic() + 5
        while time.monotonic() < end:
            done = [e for e in r.of("response.done") if e.event["response"]["id"] == rid]
            if done:
                rec["server_timings_ms"] = (done[0].event["response"].get("kombain") or {}).get("timings_ms", {})
                return
            await asyncio.sleep(0.05)


def _frame_of(seconds: float, frame_s: float, n: int, end: bool = False) -> int:
    """The frame that holds the sample at `seconds` (for an end: the sample just before it)."""
    return max(0, min(n - 1, int((seconds - (1e-6 if end else 0.0)) / frame_s)))


async def line_trial(line: Line, stim: Stimulus, td: dict[str, Any]) -> dict[str, Any]:
    """Say a complete or paused utterance on the line and wait for the answer's first audio."""
    wait_s = _max_wait_s(td)
    ok = await line.settle(wait_s + 3)
    edges = stim.edges_s()
    pb = line.play(stim)
    n = len(pb.chunks)
    rec: dict[str, Any] = {"stimulus": stim.name, "pause_ms": stim.pause_ms, "speech": speech_kind(stim.clip),
                           "quiet_before": ok}
    onset = await pb.sent_at(_frame_of(edges["start"], line.frame_s, n))
    pause = None
    if stim.kind == "paused":
        pause = (await pb.sent_at(_frame_of(edges["part1_end"], line.frame_s, n, end=True)),
                 await pb.sent_at(_frame_of(edges["part2_start"], line.frame_s, n)))
        rec["pause_sent_s"] = [round(pause[0], 3), round(pause[1], 3)]
    eos = await pb.sent_at(_frame_of(edges["end"], line.frame_s, n, end=True))
    deadline = eos + wait_s + 3.0
    while True:
        out = heard_outcome(eos, onset, line.voiced(), created=line.created(), commits=line.commits(), pause=pause)
        if out["latency_s"] is not None or time.monotonic() > deadline or line.closed:
            break
        await asyncio.sleep(0.02)
    rec |= out
    # The reply audio heard from the onset on, seconds from the end of speech (what the verdict read).
    rec["reply_bursts_s"] = bursts(line.voiced(), onset, time.monotonic(), eos)
    await line.answered(rec)
    return rec


def make_line(transport: str, url: str, td: dict[str, Any], sip: tuple[str, int]) -> Line:
    if transport == "webrtc":
        return WebRTCLine(url, td)
    if transport in PHONE_LINES:
        return PhoneLine(transport, url, sip)
    raise ValueError(f"no line for transport {transport!r}")


async def run_line(url: str, transport: str, name: str, td: dict[str, Any], ds: DataSet, sets: tuple[str, ...],
                   repeats: int, sip: tuple[str, int]) -> dict[str, Any]:
    """One call of one mode saying the complete and paused utterances (`repeats` passes)."""
    t0 = time.monotonic()
    load_before = os.getloadavg()[0]
    line = make_line(transport, url, td, sip)
    out: dict[str, Any] = {"mode": name, "transport": transport, "interrupt": {"min_speech_ms": 0, "min_words": 0},
                           "session_turn_detection": td | ({"set_by": "server default (KOMBAIN_*)"}
                                                           if transport in PHONE_LINES else {}),
                           "complete": [], "paused": [], "reply": []}
    try:
        await line.open()
        for r in range(repeats):
            if "complete" in sets:
                for stim in ds.complete:
                    out["complete"].append(await line_trial(line, stim, td) | {"repeat": r})
            if "paused" in sets:
                for stim in ds.paused_for_repeat(r):
                    out["paused"].append(await line_trial(line, stim, td) | {"repeat": r})
            if line.closed:
                line.errors.append(f"{transport} call closed by the server")
                break
    except Exception as exc:  # noqa: BLE001 - a failed call is a result here
        line.errors.append(f"{transport}: {type(exc).__name__}: {exc}")
    finally:
        with contextlib.suppress(Exception):
            await line.close()
    out["errors"] = line.errors
    out["seconds"] = round(time.monotonic() - t0, 1)
    out["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    out["summary"] = summarize(out)
    return out


async def run_line_callers(url: str, transport: str, n: int, name: str, td: dict[str, Any], ds: DataSet,
                           sets: tuple[str, ...], repeats: int, sip: tuple[str, int]) -> dict[str, Any]:
    """`n` calls at once (starts staggered by 0.37 s, as over the WebSocket), pooled into one run:
    `name` for one caller, `name xN` for more."""
    async def one(i: int) -> dict[str, Any]:
        await asyncio.sleep(0.37 * i)
        return await run_line(url, transport, name, td, ds, sets, repeats, sip)

    from kombain.loadtest.server_proc import ResourceSampler

    t0 = time.monotonic()
    load_before = os.getloadavg()[0]
    client = ResourceSampler(os.getpid())  # the callers' own process (aiortc's Opus is not free)
    sampling = asyncio.create_task(client.run())
    try:
        parts = await asyncio.gather(*[one(i) for i in range(n)])
    finally:
        sampling.cancel()
    if n == 1:
        return parts[0] | {"callers": 1, "client": client.summary()}
    out: dict[str, Any] = {"mode": f"{name} x{n}", "transport": transport, "callers": n,
                           "interrupt": parts[0]["interrupt"],
                           "session_turn_detection": parts[0]["session_turn_detection"],
                           "complete": [r | {"caller": i} for i, p in enumerate(parts) for r in p["complete"]],
                           "paused": [r | {"caller": i} for i, p in enumerate(parts) for r in p["paused"]],
                           "reply": [], "errors": [e for p in parts for e in p["errors"]],
                           "seconds": round(time.monotonic() - t0, 1),
                           "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                           "client": client.summary()}
    out["summary"] = summarize(out)
    return out
