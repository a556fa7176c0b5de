"""`python -m kombain.loadtest conversation --transport twilio|asterisk`: N phone calls at once.
(`--transport sip|audiosocket` reuse `PhoneSession` from loadtest/conversation_pbx.py.)

Each caller is a `TwilioCaller` or `AsteriskCaller` (clients/phone_callers.py): it connects to
/v1/telephony/twilio or /v1/telephony/asterisk and streams 8 kHz mu-law in 20 ms frames at real
time, silence between utterances, as a phone network does. It says recorded clips from
tests/data/speech (resampled to 8 kHz; each caller starts at a different clip), waits for the echo
reply, waits for the reply to finish playing and speaks again. Every `interrupt_every`-th reply is
interrupted: 0.8 s after the reply's first audio arrives, the caller says its next clip over it.
Callers start staggered over 1 s; each says 3 x `rounds` clips (by default the 2nd reply is
interrupted by the 3rd clip), and every call is bounded in time.

Stages (client clock; a sent frame counts as voiced when its RMS is above -40 dBFS, a received one
when its peak is above 300/32768, as `Heard` counts it):
  turn           last voiced frame of the utterance sent -> first voiced reply audio received
  barge_in       first voiced frame of the interruption sent -> Twilio `clear` / Asterisk FLUSH_MEDIA
                 received. Interruptions with none within 3 s count as `no_clear`, except when
                 nothing was playing at the onset (the reply was over, or had run dry mid-way):
                 those count as `reply_over`, not as barge-ins
  barge_in_hold  Asterisk only: that frame sent -> PAUSE_MEDIA received (the server holds the
                 reply at the first voiced frame and flushes once speech is confirmed)
  barge_in_last_audio  that frame sent -> the last voiced reply chunk received before the clear
                 (0 when none arrived after it): when the server stopped sending the cut reply
  reply_gap      per reply heard out: silence the caller's playback ran dry for mid-reply (reply
                 audio that arrived after what came before it had finished playing)
Server side, from GET /metrics before and after the run (histogram differences; quantiles are
estimated from the buckets, by linear interpolation inside a bucket as Prometheus does):
  turn (server)             kombain_turn_seconds{transport}: last voiced sample received ->
                            first reply audio sent, 500 ms silence wait included
  tts_first_audio (server)  kombain_tts_first_audio_seconds: reply text -> first audio synthesised
  barge_in (server)         kombain_barge_in_seconds{transport}: interruption onset -> output held
  stt_final (server)        kombain_stt_final_seconds{transport}
and `server_probe`: GET /healthz round trip, 5 a second during the run (how promptly the server's
event loop answers; a stall there delays every call's audio).
After a turn with no reply within 10 s the caller lets the late reply play out, and does not sample
the next turn. Packet loss does not apply (TCP); calls that failed to connect, closed early or
timed out, and turns that got no reply, are counted instead.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soxr

from kombain.clients.phone_callers import FRAME, RATE, AsteriskCaller, PhoneCaller, TwilioCaller
from kombain.clients.realtime_client import read_wav
from kombain.loadtest.server_proc import ResourceSampler
from kombain.loadtest.stats import summary

VOICED_RMS = 0.01 * 32768  # -40 dBFS on int16: a sent frame above this is speech
REPLY_PEAK = 300  # a received chunk with a sample above this is reply speech (Heard's threshold)
INTERRUPT_AFTER_S = 0.8
CLEAR_WITHIN_S = 3.0
REPLY_WITHIN_S = 10.0  # a turn with no reply audio this long after the utterance got none
QUIET_S = 1.2  # reply audio arrives ~0.5 s ahead of playback; this much quiet means it has played
STAGES = ("turn", "barge_in", "barge_in_hold", "barge_in_last_audio", "reply_gap", "server_probe")
PROBE_EVERY_S = 0.2
SERVER_HISTOGRAMS = {  # stage -> (metric, labelled by transport)
    "turn (server)": ("kombain_turn_seconds", True),
    "tts_first_audio (server)": ("kombain_tts_first_audio_seconds", False),
    "barge_in (server)": ("kombain_barge_in_seconds", True),
    "stt_final (server)": ("kombain_stt_final_seconds", True),
}


def load_clips_8k(audio_dir: Path) -> list[tuple[str, np.ndarray]]:
    """The clips at 8 kHz int16, leading silence cut to 0.1 s (so an interruption starts when meant)."""
    rows = (audio_dir / "transcripts.tsv").read_text().strip().splitlines()[1:]
    clips = []
    for name in (r.split("\t", 1)[0] for r in rows):
        audio, rate = read_wav(audio_dir / name)
        pcm = (np.clip(soxr.resample(audio, rate, RATE), -1, 1) * 32767).astype(np.int16)
        frames = pcm[: len(pcm) // FRAME * FRAME].reshape(-1, FRAME).astype(np.float32)
        voiced = np.nonzero(np.sqrt((frames**2).mean(axis=1)) > VOICED_RMS)[0]
        lead = max(0, int(voiced[0]) - 5) * FRAME if len(voiced) else 0
        clips.append((name, pcm[lead:]))
    return clips


def plan_utterances(clips: list[tuple[str, np.ndarray]], count: int, interrupt_every: int,
                    caller: int) -> list[np.ndarray]:
    """`count` clips for one caller, each caller starting elsewhere in the list. An utterance whose
    reply will be interrupted is one of the three longest clips, so that its echo reply is still
    playing when the interruption is confirmed (a short one may be over by then)."""
    by_length = sorted(range(len(clips)), key=lambda k: len(clips[k][1]))
    long, rest = by_length[-3:], by_length[:-3]
    out, n_long, n_rest = [], caller, caller * 3
    for i in range(count):
        if interrupt_every and (i + 1) % interrupt_every == 0 and i + 1 < count:
            out.append(clips[long[n_long % len(long)]][1])
            n_long += 1
        else:
            out.append(clips[rest[n_rest % len(rest)]][1])
            n_rest += 1
    return out


class _SendLog:
    """Notes when each voiced frame left the caller (after the socket took it)."""

    voiced_sent: list[float]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.voiced_sent = []

    async def _send_audio(self, frame: np.ndarray) -> None:
        await super()._send_audio(frame)  # type: ignore[misc]
        if len(frame) == FRAME and float(np.sqrt(np.mean(frame.astype(np.float32) ** 2))) > VOICED_RMS:
            self.voiced_sent.append(time.monotonic())


class _Twilio(_SendLog, TwilioCaller):
    pass


class _Asterisk(_SendLog, AsteriskCaller):
    pass


def endpoint(url: str, transport: str) -> str:
    base = url.rstrip("/").replace("https://", "wss://").replace("http://", "ws://")
    return base + ("/v1/telephony/twilio" if transport == "twilio" else "/v1/telephony/asterisk")


class PhoneSession:
    """One simulated phone call going through its utterances; fills `samples` and `counts`."""

    def __init__(self, url: str, transport: str, utterances: list[np.ndarray], interrupt_every: int,
                 caller: PhoneCaller | None = None) -> None:
        self.caller: PhoneCaller = caller or (_Twilio if transport == "twilio" else _Asterisk)(endpoint(url, transport))
        self.transport, self.utterances, self.interrupt_every = transport, utterances, interrupt_every
        self.samples: dict[str, list[float]] = {k: [] for k in STAGES}
        self.counts = {"turns": 0, "replies": 0, "no_reply": 0, "barge_ins": 0, "no_clear": 0, "reply_over": 0}
        self.errors: list[str] = []
        self.stopping = False
        self._heard_voiced: list[float] = []  # receive times of voiced reply chunks, kept up to date
        self._seen = 0
        self._skip_turn = False
        self._pending_said: asyncio.Future[tuple[float, float] | None] | None = None

    @property
    def log(self) -> list[float]:
        return self.caller.voiced_sent  # type: ignore[attr-defined, no-any-return]

    def _check_open(self) -> None:
        h = self.caller.heard
        if self.caller.closed.is_set() and not self.stopping:
            raise _ClosedEarly(f"closed by the server after {self.counts['turns']} turn(s): "
                               f"code {h.close_code} {h.close_reason!r}")

    async def _until(self, cond: Any, within_s: float) -> bool:
        loop = asyncio.get_running_loop()
        end = loop.time() + within_s
        while not cond():
            self._check_open()
            if loop.time() >= end:
                return False
            await asyncio.sleep(0.02)
        return True

    async def _say(self, pcm: np.ndarray) -> tuple[float, float] | None:
        """Say `pcm` (queued after what is queued); its first and last voiced send times."""
        before = len(self.caller.voice_sent)
        self.caller.say(pcm)
        await self.caller.wait_said(timeout_s=len(pcm) / RATE + 10)
        await self._until(lambda: len(self.caller.voice_sent) > before, 1.0)
        first, last = self.caller.voice_sent[-1]
        voiced = [t for t in self.log if first <= t <= last + 0.001]
        return (voiced[0], voiced[-1]) if voiced else None

    def _voiced_heard(self) -> list[float]:
        """Receive times of voiced reply chunks (each chunk looked at once, not on every poll)."""
        audio = self.caller.heard.audio
        while self._seen < len(audio):
            t, pcm = audio[self._seen]
            self._seen += 1
            if len(pcm) and int(np.abs(pcm.astype(np.int32)).max()) > REPLY_PEAK:
                self._heard_voiced.append(t)
        return self._heard_voiced

    def _gaps(self, since: float) -> float:
        """Silence the caller's playback ran dry for inside the reply received after `since`: reply
        audio arriving later than the audio before it finished playing (an underrun)."""
        audio = self.caller.heard.audio
        k = len(audio)
        while k > 0 and audio[k - 1][0] >= since:
            k -= 1
        voiced = [t for t in self._voiced_heard() if t >= since]
        if not voiced:
            return 0.0
        gap, play_end = 0.0, audio[k][0] if k < len(audio) else 0.0
        for t, pcm in audio[k:]:
            if t > voiced[-1]:
                break
            if t > play_end + 0.02:
                gap += t - play_end
            play_end = max(play_end, t) + len(pcm) / RATE
        return gap

    def _first_reply_audio(self, after: float) -> float | None:
        voiced = self._voiced_heard()
        i = bisect.bisect_left(voiced, after)
        return voiced[i] if i < len(voiced) else None

    async def _wait_quiet(self, since: float, within_s: float = 30) -> None:
        def quiet() -> bool:
            voiced = self._voiced_heard()
            return bool(voiced) and voiced[-1] >= since and time.monotonic() - voiced[-1] > QUIET_S

        await self._until(quiet, within_s)

    async def run(self) -> None:
        c = self.caller
        try:
            await c.connect()
        except Exception as exc:  # noqa: BLE001 - a failed call is a result here
            raise _CallFailed(f"connect: {exc!r}") from None
        try:
            await self._converse()
        finally:
            self.stopping = True
            if (p := self._pending_said) is not None:
                p.cancel()
                if p.done() and not p.cancelled():
                    p.exception()  # retrieved: it is reported through the call's own outcome
            await c.stop()

    async def _converse(self) -> None:
        await asyncio.sleep(0.3)  # a moment of line silence before the caller speaks
        spans: dict[int, tuple[float, float] | None] = {}
        pending: asyncio.Future[tuple[float, float] | None] | None = None
        replies = 0
        for i, pcm in enumerate(self.utterances):
            if pending is not None:  # this utterance was started as an interruption of the last reply
                spans[i], pending = await pending, None
            else:
                spans[i] = await self._say(pcm)
            self.counts["turns"] += 1
            span = spans[i]
            if span is None:
                self.errors.append(f"utterance {i} had no voiced frame")
                continue
            end = span[1]
            ok = await self._until(lambda e=end: self._first_reply_audio(e) is not None, REPLY_WITHIN_S)
            first = self._first_reply_audio(end)
            if not ok or first is None:
                self.counts["no_reply"] += 1
                # A late reply must not be taken for the next turn's: let it arrive and play out.
                await self._wait_quiet(end, within_s=REPLY_WITHIN_S)
                self._skip_turn = True
                continue
            if not self._skip_turn:
                self.samples["turn"].append(first - end)
            self._skip_turn = False
            self.counts["replies"] += 1
            replies += 1
            if self.interrupt_every and replies % self.interrupt_every == 0 and i + 1 < len(self.utterances):
                await asyncio.sleep(max(0.0, first + INTERRUPT_AFTER_S - time.monotonic()))
                await self._barge_in(self.utterances[i + 1])
                pending = self._pending_said
            else:
                await self._wait_quiet(first)
                self.samples["reply_gap"].append(self._gaps(end))
                await asyncio.sleep(random.uniform(0, 0.3))

    async def _barge_in(self, pcm: np.ndarray) -> None:
        """Say `pcm` over the reply; time the clear (and Asterisk's PAUSE_MEDIA) from its onset."""
        c = self.caller
        clears, sent, cmds = len(c.heard.clears), len(self.log), len(c.heard.commands)
        self.counts["barge_ins"] += 1
        self._pending_said = asyncio.ensure_future(self._say(pcm))
        lead_s = len(pcm) / RATE  # the onset is somewhere in the clip
        if not await self._until(lambda: len(self.log) > sent, lead_s + 1):
            self.errors.append("interruption had no voiced frame")
            return
        onset = self.log[sent]
        to_play = c.playback.play_end - onset  # reply audio the caller still had to play at the onset
        got = await self._until(lambda: len(c.heard.clears) > clears, onset + CLEAR_WITHIN_S - time.monotonic())
        cleared = c.heard.clears[clears] if got else time.monotonic()
        voiced = self._voiced_heard()
        after = [t for t in voiced[bisect.bisect_left(voiced, onset):] if t <= cleared]
        if got:
            self.samples["barge_in"].append(cleared - onset)
            self.samples["barge_in_last_audio"].append(after[-1] - onset if after else 0.0)
        elif to_play <= 0 and not after:  # nothing was playing: the reply was over, or had run dry
            self.counts["barge_ins"] -= 1
            self.counts["reply_over"] += 1
            self._skip_turn = True
        else:
            self.counts["no_clear"] += 1
            self._skip_turn = True  # the old reply may still be arriving: the next `turn` would be wrong
            cmds_after = ", ".join(f"{w}@{t - onset:+.2f}s" for t, w in c.heard.commands[cmds:])
            self.errors.append(f"no clear within {CLEAR_WITHIN_S:.0f} s of the interruption at reply "
                               f"{self.counts['replies']}; reply audio received until "
                               f"{(after[-1] - onset if after else 0):+.2f} s, {to_play:.2f} s of it still "
                               f"to play at the onset; commands after it: [{cmds_after}]")
        pauses = [t for t, w in c.heard.commands[cmds:] if w == "PAUSE_MEDIA" and t >= onset]
        if pauses:
            self.samples["barge_in_hold"].append(pauses[0] - onset)


class _ClosedEarly(Exception):
    pass


class _CallFailed(Exception):
    pass


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], dict[float, float]]:
    """Cumulative histogram buckets from /metrics: (name, labels without le) -> {le: count}."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, tuple[tuple[str, str], ...]], dict[float, float]] = {}
    text = httpx.get(url.rstrip("/") + "/metrics", timeout=10).text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.endswith("_bucket"):
                labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                out.setdefault((s.name[: -len("_bucket")], labels), {})[float(s.labels["le"])] = s.value
    return out


def bucket_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile: linear inside the bucket; the last finite bound past it."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0
    if total <= 0:
        return None
    rank, prev_b, prev_c = q * total, 0.0, 0.0
    for b in bounds:
        c = buckets[b]
        if c >= rank:
            if math.isinf(b):
                return prev_b
            return prev_b + (b - prev_b) * ((rank - prev_c) / (c - prev_c) if c > prev_c else 1.0)
        prev_b, prev_c = b, c
    return prev_b


def server_stages(before: dict, after: dict, transport: str) -> dict[str, dict[str, Any]]:  # type: ignore[type-arg]
    out: dict[str, dict[str, Any]] = {}
    for stage, (name, labelled) in SERVER_HISTOGRAMS.items():
        key = (name, (("transport", transport),) if labelled else ())
        a, b = after.get(key, {}), before.get(key, {})
        diff = {le: a[le] - b.get(le, 0.0) for le in a}
        n = int(diff.get(math.inf, 0))
        row: dict[str, Any] = {"count": n, "estimate": "buckets", "metric": name}
        for q in (50, 95, 99):
            v = bucket_quantile(q / 100, diff) if n else None
            row[f"p{q}_ms"] = None if v is None else round(v * 1000, 1)
        finite = sorted(le for le in diff if not math.isinf(le))
        row["above_top_bucket"] = int(n - diff[finite[-1]]) if finite and n else 0
        out[stage] = row
    return out


async def _probe(url: str, out: list[float]) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        while True:
            t = time.monotonic()
            try:
                await http.get(url.rstrip("/") + "/healthz")
                out.append(time.monotonic() - t)
            except httpx.HTTPError:
                pass
            await asyncio.sleep(max(0.0, t + PROBE_EVERY_S - time.monotonic()))


class _MachineSampler:
    """The whole machine's CPU (% of one core, all cores summed) during the run: others' test runs
    on a shared host show up as what neither the server nor the callers used."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.cpu: list[float] = []
        self.load_before = os.getloadavg()

    async def run(self) -> None:
        import psutil

        psutil.cpu_percent(None)
        while True:
            await asyncio.sleep(self.interval)
            self.cpu.append(psutil.cpu_percent(None) * (os.cpu_count() or 1))

    def summary(self, server: dict[str, Any] | None, client: dict[str, Any]) -> dict[str, Any]:
        mean = round(sum(self.cpu) / len(self.cpu), 1) if self.cpu else None
        others = None
        if mean is not None and server and server.get("cpu_mean_pct") is not None:
            others = round(max(0.0, mean - server["cpu_mean_pct"] - (client.get("cpu_mean_pct") or 0)), 1)
        return {"loadavg_before": [round(x, 2) for x in self.load_before], "cpu_mean_pct": mean,
                "others_cpu_mean_pct": others, "cores": os.cpu_count()}


async def run_conversation_phone(url: str, transport: str, sessions: int, audio_dir: Path, interrupt_every: int = 2,
                                 rounds: int = 1, sampler: Any = None,
                                 make_session: Callable[[int, list[np.ndarray]], PhoneSession] | None = None,
                                 ) -> dict[str, Any]:
    """Run `sessions` calls; `make_session(i, utterances)` builds call i (default: Twilio or Asterisk)."""
    clips = load_clips_8k(audio_dir)
    per_call = 3 * rounds
    plans = [plan_utterances(clips, per_call, interrupt_every, i) for i in range(sessions)]
    make = make_session or (lambda i, plan: PhoneSession(url, transport, plan, interrupt_every))
    calls = [make(i, plan) for i, plan in enumerate(plans)]
    # Bound: a turn is at most a clip (<= 4 s) + the reply wait (twice, when it is late) + the reply
    # playing out + the quiet.
    per_call_s = 15 + per_call * (4 + 2 * REPLY_WITHIN_S + 8)

    async def start(s: PhoneSession) -> None:
        await asyncio.sleep(random.uniform(0, 1.0) if sessions > 1 else 0)
        async with asyncio.timeout(per_call_s):
            await s.run()

    before = await asyncio.to_thread(_scrape, url)
    sampling = asyncio.create_task(sampler.run()) if sampler else None
    client = ResourceSampler(os.getpid())  # the callers' own process: it must not be the bottleneck
    client_sampling = asyncio.create_task(client.run())
    machine = _MachineSampler()
    machine_sampling = asyncio.create_task(machine.run())
    probes: list[float] = []
    probing = asyncio.create_task(_probe(url, probes))
    t0 = time.monotonic()
    results = await asyncio.gather(*(start(s) for s in calls), return_exceptions=True)
    wall = time.monotonic() - t0
    if sampling:
        sampling.cancel()
    client_sampling.cancel()
    probing.cancel()
    machine_sampling.cancel()
    await asyncio.sleep(0.5)  # let the server record what the last hang-ups finished
    after = await asyncio.to_thread(_scrape, url)

    stages: dict[str, list[float]] = {k: [] for k in STAGES}
    counts = {"calls": sessions, "completed": 0, "failed": 0, "closed_early": 0, "timed_out": 0}
    turns = {"turns": 0, "replies": 0, "no_reply": 0, "barge_ins": 0, "no_clear": 0, "reply_over": 0}
    errors: list[str] = []
    stages["server_probe"] = probes
    for s, r in zip(calls, results, strict=True):
        for k, v in s.samples.items():
            if k != "server_probe":
                stages[k] += v
        for k in turns:
            turns[k] += s.counts[k]
        errors += s.errors
        if isinstance(r, _CallFailed):
            counts["failed"] += 1
        elif isinstance(r, _ClosedEarly):
            counts["closed_early"] += 1
        elif isinstance(r, TimeoutError):
            counts["timed_out"] += 1
            r = TimeoutError(f"call did not finish within {per_call_s} s (after {s.counts['turns']} turn(s))")
        elif isinstance(r, BaseException):
            counts["failed"] += 1
        else:
            counts["completed"] += 1
        if isinstance(r, BaseException):
            errors.append(f"{type(r).__name__}: {r}")
    if turns["no_reply"]:
        errors.append(f"{turns['no_reply']} turn(s) got no reply within {REPLY_WITHIN_S:.0f} s")
    if turns["no_clear"]:
        errors.append(f"{turns['no_clear']} interruption(s) got no clear within {CLEAR_WITHIN_S:.0f} s")
    return {"sessions": sessions, "transport": transport, "responses": counts | turns | {"wall_s": round(wall, 1)},
            "stages": {k: summary(v) for k, v in stages.items()}, "samples": stages,
            "server_stages": server_stages(before, after, transport), "errors": errors,
            "server": sampler.summary() if sampler else None, "client": client.summary(),
            "machine": machine.summary(sampler.summary() if sampler else None, client.summary())}
