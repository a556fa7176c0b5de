"""Real telephony peers for the SIP transport's tests: sipp and baresip on 127.0.0.1.

Everything here only starts processes on loopback. The tests that use it run in a network
namespace that has nothing but `lo` (see tests/webrtc/test_in_netns.py for the pattern and
KOMBAIN_NETNS_INNER), so no call can leave the machine.

Peers:

* `run_sipp(...)`: one sipp UAC call (scenarios/*.xml), bounded in time. sipp plays media with
  `play_pcap_audio` (see pcap.py), which needs a raw socket: root or CAP_NET_RAW, which the
  test process has inside `unshare -n` as root (or `unshare -rn`).
* `sipp_uas(...)`: a sipp UAS (`-sn uas` or one of the harness's uas_*.xml) for checking the
  harness itself, or as a far end for the server's outbound calls.
* `RtpRecorder`: what arrives at a UDP port. sipp always binds its `-mp` port (and `-mp`+2),
  even with RTP echo off, and nothing reads it, so a second socket cannot bind that port
  (sipp sets no SO_REUSEADDR/SO_REUSEPORT, and SO_REUSEPORT would split the packets anyway).
  The recorder therefore listens with a raw IPv4/UDP socket, which Linux gives a copy of every
  UDP datagram delivered locally, and keeps those addressed to its port: it records what the
  server sends to sipp's media port without disturbing sipp. (Also root/CAP_NET_RAW.) With
  `sniff=False` it binds the port itself instead, as a plain RTP sink.
* `run_baresip(...)` / `BaresipPeer`: baresip 1.0 as a phone that dials (or answers), speaks a
  WAV, records what it hears, can send RFC 4733 DTMF, and hangs up after N seconds or when the
  far end hangs up.
* `send_garbage_sip(...)`: malformed SIP datagrams (plain Python, not sipp).
* `netem(...)`: loss/delay/jitter on `lo` with tc, only inside the test's own namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tests.sip import pcap

LOCALHOST = "127.0.0.1"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
SIPP = "sipp"
BARESIP = "baresip"
BARESIP_MODULES = Path("/usr/lib/baresip/modules")
NETNS_ENV = "KOMBAIN_NETNS_INNER"

# -key values each scenario needs, with their defaults (None: the caller must give it).
SCENARIO_KEYS: dict[str, dict[str, str | None]] = {
    "uac_call.xml": {"to_user": "kombain", "from_user": "caller", "speech_pcap": None,
                     "pause_ms": "3000", "play_dtmf": "0", "dtmf_pcap": None, "dtmf_pause_ms": "0",
                     "responder": ""},
    "uac_wait_bye.xml": {"to_user": "kombain", "from_user": "caller", "speech_pcap": None,
                         "pause_ms": "3000", "play_dtmf": "0", "dtmf_pcap": None, "dtmf_pause_ms": "0",
                         "responder": ""},
    "uac_cancel.xml": {"to_user": "kombain", "from_user": "caller", "cancel_after_ms": "1000"},
    "options.xml": {"to_user": "kombain", "from_user": "caller"},
    "uas_answer.xml": {"reply_pcap": None, "play_reply": "0", "hangup_after_ms": "0"},
    "uas_ring_cancel.xml": {},
}


def in_test_netns() -> bool:
    return os.environ.get(NETNS_ENV) == "1"


# --- ports -------------------------------------------------------------------------------------

def free_udp_port(span: int = 1, host: str = LOCALHOST) -> int:
    """An even UDP port P with P .. P+span-1 all free on host (span 4 covers sipp's -mp, -mp+2
    and their RTCP ports). Free when checked; a race with another process is possible but rare
    inside a test namespace."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))
            base = probe.getsockname()[1] & ~1
        if base + span > 65535 or base < 1024:
            continue
        socks: list[socket.socket] = []
        try:
            for p in range(base, base + span):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((host, p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no run of {span} free UDP ports on {host}")


# --- processes ---------------------------------------------------------------------------------

async def _stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM, grace_s: float = 3.0) -> None:
    """Stop a child we started: sig, then SIGKILL after grace_s."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        await asyncio.wait_for(proc.wait(), grace_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


# --- sipp --------------------------------------------------------------------------------------

@dataclass
class SippResult:
    returncode: int | None  # sipp: 0 all calls passed, 1 some failed, 97/99 other ends, -9 killed
    stdout: str
    stderr: str
    errors_log: str  # -trace_err: why a call failed ("" when none did)
    messages_log: str = ""  # -trace_msg: every SIP message sent and received
    timed_out: bool = False  # we killed it after timeout_s (sipp's own -timeout did not end it)
    elapsed_s: float = 0.0
    command: list[str] = field(default_factory=list)
    workdir: Path | None = None

    @property
    def successful_calls(self) -> int:
        return _sipp_counter(self.stdout, "Successful call")

    @property
    def failed_calls(self) -> int:
        return _sipp_counter(self.stdout, "Failed call")

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def explain(self) -> str:
        """Everything useful for an assertion message."""
        return (f"sipp rc={self.returncode} timed_out={self.timed_out} elapsed={self.elapsed_s:.1f}s\n"
                f"cmd: {' '.join(self.command)}\n--- errors ---\n{self.errors_log[-3000:]}\n"
                f"--- stderr ---\n{self.stderr[-2000:]}\n--- messages ---\n{self.messages_log[-4000:]}\n"
                f"--- stdout ---\n{self.stdout[-1500:]}")


def _sipp_counter(stdout: str, name: str) -> int:
    """The cumulative column of a counter line of sipp's final statistics screen."""
    rows = re.findall(rf"^\s*{re.escape(name)}\s*\|\s*(\d+)\s*\|\s*(\d+)", stdout, re.MULTILINE)
    return int(rows[-1][1]) if rows else 0


def scenario_path(scenario: str | Path) -> Path:
    p = Path(scenario)
    if p.is_absolute() or p.exists():
        return p
    name = p.name if p.suffix == ".xml" else f"{p.name}.xml"
    return SCENARIOS / name


def scenario_keys(scenario: str | Path, params: Mapping[str, str] | None) -> dict[str, str]:
    """The -key values for a scenario: its defaults, then params. A uac_call/uac_wait_bye
    dtmf_pcap defaults to the speech pcap (sipp loads every pcap of a scenario at start, played
    or not), and giving a dtmf_pcap turns play_dtmf on unless params say otherwise."""
    params = dict(params or {})
    name = scenario_path(scenario).name
    keys = {k: v for k, v in SCENARIO_KEYS.get(name, {}).items() if v is not None}
    if "dtmf_pcap" in SCENARIO_KEYS.get(name, {}):
        if "dtmf_pcap" in params and "play_dtmf" not in params:
            params["play_dtmf"] = "1"
        if "dtmf_pcap" not in params and "speech_pcap" in params:
            keys["dtmf_pcap"] = params["speech_pcap"]
    keys.update({k: str(v) for k, v in params.items()})
    missing = [k for k, v in SCENARIO_KEYS.get(name, {}).items() if v is None and k not in keys]
    if missing:
        raise ValueError(f"{name} needs -key {', '.join(missing)}")
    return keys


def sipp_command(scenario: str | Path | None, *, target: str | None, params: Mapping[str, str] | None,
                 media_port: int, local_port: int, timeout_s: float, workdir: Path,
                 calls: int | None = 1, extra_args: tuple[str, ...] = ()) -> list[str]:
    """argv for sipp. scenario None means the built-in UAS (`-sn uas`)."""
    cmd = [SIPP]
    if target:
        cmd.append(target)
    if scenario is None:
        cmd += ["-sn", "uas"]
    else:
        cmd += ["-sf", str(scenario_path(scenario))]
        for k, v in scenario_keys(scenario, params).items():
            cmd += ["-key", k, v]
    cmd += ["-i", LOCALHOST, "-p", str(local_port), "-mi", LOCALHOST, "-mp", str(media_port),
            "-cp", str(free_udp_port()), "-t", "u1", "-nostdin",
            "-timeout", f"{max(1, int(round(timeout_s)))}s", "-timeout_error",
            "-max_retrans", "5",
            "-trace_err", "-error_file", str(workdir / "errors.log"),
            "-trace_msg", "-message_file", str(workdir / "messages.log")]
    if calls is not None:
        cmd += ["-m", str(calls), "-l", "1"]
    return cmd + list(extra_args)


async def run_sipp(scenario: str, target: str = "127.0.0.1:5060", *, params: Mapping[str, str] | None = None,
                   media_port: int | None = None, local_port: int | None = None, timeout_s: float = 30.0,
                   workdir: Path | None = None, extra_args: tuple[str, ...] = ()) -> SippResult:
    """Run one sipp UAC call of `scenario` (a file in scenarios/ or a path) against target.

    params become `-key name value` (scenario_keys adds the defaults). sipp's own -timeout
    (with -timeout_error) is timeout_s; if sipp is still running 5 s after that it is killed
    and the result says timed_out. Logs go to workdir (a new temp dir by default).
    """
    workdir = Path(workdir or tempfile.mkdtemp(prefix="sipp-"))
    workdir.mkdir(parents=True, exist_ok=True)
    media_port = media_port or free_udp_port(4)
    local_port = local_port or free_udp_port()
    cmd = sipp_command(scenario, target=target, params=params, media_port=media_port, local_port=local_port,
                       timeout_s=timeout_s, workdir=workdir, extra_args=extra_args)
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=workdir, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                env=dict(os.environ, TERM="dumb"))
    timed_out = False
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s + 5)
    except TimeoutError:
        timed_out = True
        await _stop(proc, signal.SIGKILL)
        out, err = await proc.communicate()
    except BaseException:  # cancelled: never leave sipp behind
        await _stop(proc, signal.SIGKILL)
        raise
    return SippResult(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"),
                      _read(workdir / "errors.log"), _read(workdir / "messages.log"), timed_out,
                      time.monotonic() - t0, cmd, workdir)


class SippUas:
    """A sipp UAS in the background: `-sn uas` (scenario None) or a uas_*.xml.

    `-sn uas` answers every INVITE with 180 + 200 (SDP: PCMU only, media port `media_port`,
    sends no audio), waits for BYE; with auto_answer (-aa) it also answers OPTIONS, INFO,
    NOTIFY and UPDATE with 200.
    """

    def __init__(self, scenario: str | None = None, *, params: Mapping[str, str] | None = None,
                 port: int | None = None, media_port: int | None = None, auto_answer: bool = True,
                 calls: int | None = None, timeout_s: float = 120.0, workdir: Path | None = None):
        self.scenario = scenario
        self.params = params
        self.port = port or free_udp_port()
        self.media_port = media_port or free_udp_port(4)
        self.auto_answer = auto_answer
        self.calls = calls
        self.timeout_s = timeout_s
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="sipp-uas-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: asyncio.subprocess.Process | None = None
        self.result: SippResult | None = None
        self._t0 = 0.0
        self._cmd: list[str] = []

    @property
    def target(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    def uri(self, user: str = "kombain") -> str:
        return f"sip:{user}@{self.target}"

    async def start(self) -> SippUas:
        extra = ("-aa",) if self.auto_answer else ()
        self._cmd = sipp_command(self.scenario, target=None, params=self.params, media_port=self.media_port,
                                 local_port=self.port, timeout_s=self.timeout_s, workdir=self.workdir,
                                 calls=self.calls, extra_args=extra)
        if self.calls is None:  # no -timeout_error: a UAS that outlives its test is stopped, not failed
            i = self._cmd.index("-timeout_error")
            del self._cmd[i]
        self._t0 = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            *self._cmd, cwd=self.workdir, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=dict(os.environ, TERM="dumb"))
        self._out = asyncio.ensure_future(self.proc.stdout.read())  # type: ignore[union-attr]
        self._err = asyncio.ensure_future(self.proc.stderr.read())  # type: ignore[union-attr]
        await _wait_udp_bound(self.port, self.proc, 5.0)
        return self

    async def wait(self, timeout_s: float | None = None) -> SippResult:
        """Wait for sipp to end by itself (with `calls` set), killing it after timeout_s."""
        assert self.proc is not None
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s or self.timeout_s + 5)
        except TimeoutError:
            await _stop(self.proc, signal.SIGKILL)
            return await self._finish(timed_out=True)
        return await self._finish()

    async def stop(self) -> SippResult:
        """End it now: SIGINT (sipp quits at once and prints its statistics; calls still in
        their final timewait are not counted yet), SIGKILL if that does not do it."""
        if self.result is not None:
            return self.result
        assert self.proc is not None
        await _stop(self.proc, signal.SIGINT, grace_s=5.0)
        return await self._finish()

    async def _finish(self, timed_out: bool = False) -> SippResult:
        out, err = await self._out, await self._err
        self.result = SippResult(self.proc.returncode if self.proc else None, out.decode(errors="replace"),
                                 err.decode(errors="replace"), _read(self.workdir / "errors.log"),
                                 _read(self.workdir / "messages.log"), timed_out,
                                 time.monotonic() - self._t0, self._cmd, self.workdir)
        return self.result

    async def __aenter__(self) -> SippUas:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def sipp_uas(scenario: str | None = None, **kwargs: object) -> SippUas:
    """`async with sipp_uas() as uas:` -- see SippUas."""
    return SippUas(scenario, **kwargs)  # type: ignore[arg-type]


def udp_port_bound(port: int) -> bool:
    """Whether a UDP socket of this network namespace is bound to port (from /proc/net/udp,
    so the check cannot race the peer for the port as a test bind would)."""
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                local = line.split()[1]
                if int(local.rsplit(":", 1)[1], 16) == port:
                    return True
    return False


async def _wait_udp_bound(port: int, proc: asyncio.subprocess.Process, timeout_s: float) -> None:
    """Until something has bound udp port (the peer listens), or proc died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.returncode is not None or udp_port_bound(port):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"nothing listens on udp {port} after {timeout_s}s")


# --- RTP recording -----------------------------------------------------------------------------

@dataclass(frozen=True)
class RecordedPacket:
    t: float  # time.monotonic() at arrival
    src: tuple[str, int]
    rtp: pcap.RtpHeader


@dataclass(frozen=True)
class DtmfEvent:
    digit: str
    t: float  # arrival of its first packet (monotonic)
    duration_ms: float
    ended: bool  # an end (E bit) packet arrived
    ssrc: int
    timestamp: int


_EVENT_DIGITS = {v: k for k, v in pcap.DTMF_EVENTS.items()}


class RtpRecorder:
    """Record the RTP arriving at host:port while sipp (or anything) owns that port.

    sniff=True (default): a raw IPv4/UDP socket gets a copy of each datagram delivered to the
    machine; the ones for host:port are kept. Needs root/CAP_NET_RAW (inside the test's
    namespace). sniff=False: bind the port (it must be free) and read it like an RTP endpoint.

    Use as `async with RtpRecorder(port) as rec:` (or start()/stop()), then `rec.packets`,
    `rec.audio()`, `rec.timeline()`, `rec.dtmf_events()`, `rec.write_wav()`.
    """

    def __init__(self, port: int, host: str = LOCALHOST, *, sniff: bool = True, telephone_event_pt: int = 101,
                 ports: range | None = None):
        self.port = port
        self.ports = ports if ports is not None else range(port, port + 1)  # sniff: any of these
        self.host = host
        self.sniff = sniff
        self.te_pt = telephone_event_pt
        self.packets: list[RecordedPacket] = []
        self.malformed = 0
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> RtpRecorder:
        self._loop = asyncio.get_running_loop()
        if self.sniff:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((self.host, self.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setblocking(False)
        self._sock = sock
        self._loop.add_reader(sock.fileno(), self._on_readable)
        self.started_at = time.monotonic()
        return self

    def stop(self) -> None:
        if self._sock is not None:
            self._drain()
            assert self._loop is not None
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            self.stopped_at = time.monotonic()

    async def __aenter__(self) -> RtpRecorder:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    def _on_readable(self) -> None:
        self._drain()

    def _drain(self) -> None:
        assert self._sock is not None
        dst_ip = socket.inet_aton(self.host)
        while True:
            try:
                data, addr = self._sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            now = time.monotonic()
            if self.sniff:
                ihl = (data[0] & 0x0F) * 4
                if len(data) < ihl + 8 or data[16:20] != dst_ip:
                    continue
                sport, dport, ulen, _ = struct.unpack("!HHHH", data[ihl:ihl + 8])
                if dport not in self.ports:
                    continue
                payload = data[ihl + 8:ihl + ulen]
                src = (socket.inet_ntoa(data[12:16]), sport)
            else:
                payload, src = data, addr
            try:
                rtp = pcap.parse_rtp(payload)
            except (ValueError, struct.error):
                self.malformed += 1
                continue
            if rtp.version != 2:
                self.malformed += 1
                continue
            self.packets.append(RecordedPacket(now, src, rtp))

    # -- views of what arrived --

    def of_type(self, *pts: int) -> list[RecordedPacket]:
        return [p for p in self.packets if p.rtp.payload_type in pts]

    @property
    def sources(self) -> set[tuple[str, int]]:
        return {p.src for p in self.packets}

    def audio(self) -> np.ndarray:
        """The G.711 (PCMU/PCMA) audio back to back in sequence-number order per SSRC, SSRCs in
        order of first arrival: what was sent, without the timing."""
        out = []
        g711 = self.of_type(pcap.PT_PCMU, pcap.PT_PCMA)
        for ssrc in dict.fromkeys(p.rtp.ssrc for p in g711):
            pkts = [p for p in g711 if p.rtp.ssrc == ssrc]
            order = sorted(zip(_unwrap_seq([p.rtp.seq for p in pkts]), range(len(pkts)), strict=True))
            out += [pcap.g711_decode(pkts[i].rtp.payload, pkts[i].rtp.payload_type) for _, i in order]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int16)

    def timeline(self, start: float | None = None, end: float | None = None) -> np.ndarray:
        """8 kHz int16 of what a listener would hear from `start` to `end` (monotonic; default
        the recorder's start/stop): silence where nothing arrived. Each packet is placed by its
        RTP timestamp, anchored at its stream's first arrival; a stream whose timestamps
        drift more than 1 s from the arrival times is re-anchored at that packet."""
        start = self.started_at if start is None else start
        end = (self.stopped_at or time.monotonic()) if end is None else end
        assert start is not None
        n = max(0, int(round((end - start) * pcap.RATE)))
        out = np.zeros(n, dtype=np.int16)
        anchors: dict[int, tuple[float, int]] = {}  # ssrc -> (arrival, ts)
        for p in self.of_type(pcap.PT_PCMU, pcap.PT_PCMA):
            a = anchors.get(p.rtp.ssrc)
            if a is None:
                a = anchors[p.rtp.ssrc] = (p.t, p.rtp.timestamp)
            dts = ((p.rtp.timestamp - a[1] + 2**31) % 2**32) - 2**31
            pos = a[0] + dts / pcap.RATE
            if abs(pos - p.t) > 1.0:
                anchors[p.rtp.ssrc] = (p.t, p.rtp.timestamp)
                pos = p.t
            samples = pcap.g711_decode(p.rtp.payload, p.rtp.payload_type)
            i = int(round((pos - start) * pcap.RATE))
            lo, hi = max(i, 0), min(i + len(samples), n)
            if hi > lo:
                out[lo:hi] = samples[lo - i:hi - i]
        return out

    def write_wav(self, path: Path | str, start: float | None = None, end: float | None = None) -> Path:
        return pcap.write_wav_pcm16(path, self.timeline(start, end), pcap.RATE)

    def dtmf_events(self) -> list[DtmfEvent]:
        """RFC 4733 events received (payload type telephone_event_pt), one per (SSRC, timestamp)."""
        events: dict[tuple[int, int], DtmfEvent] = {}
        for p in self.of_type(self.te_pt):
            if len(p.rtp.payload) < 4:
                continue
            ev, flags, duration = struct.unpack("!BBH", p.rtp.payload[:4])
            key = (p.rtp.ssrc, p.rtp.timestamp)
            old = events.get(key)
            events[key] = DtmfEvent(_EVENT_DIGITS.get(ev, f"<{ev}>"), old.t if old else p.t,
                                    max(duration, (old.duration_ms * 8 if old else 0)) / 8,
                                    bool(flags & 0x80) or (old.ended if old else False), p.rtp.ssrc,
                                    p.rtp.timestamp)
        return sorted(events.values(), key=lambda e: e.t)

    def digits(self) -> str:
        return "".join(e.digit for e in self.dtmf_events())


def _unwrap_seq(seqs: list[int]) -> list[int]:
    out, last, base = [], None, 0
    for s in seqs:
        if last is not None and s - last < -30000:
            base += 65536
        elif last is not None and s - last > 30000:
            base -= 65536
        out.append(s + base)
        last = s
    return out


# --- baresip -----------------------------------------------------------------------------------

@dataclass
class BaresipResult:
    returncode: int | None
    log: str  # baresip's stdout+stderr (with the SIP trace when sip_trace)
    established: bool
    ended_by: str  # "local" (we hung up after `seconds`), "remote", "failed" (no call), "timeout"
    call_s: float | None  # from established to the end of the call
    wav_out: Path  # what it heard, 8 kHz 16-bit mono, the call's length (silence where no RTP came)
    decoded_wav: Path | None  # baresip's own decoder output (sndfile dump): only frames that came
    sip_port: int
    rtp_port: int
    rtp_received: int  # RTP packets that arrived at rtp_port
    dtmf_sent: str  # digits typed into baresip (sent as RFC 4733 if telephone-event was agreed)
    dtmf_received: str  # RFC 4733 digits that arrived at rtp_port (baresip 1.0 does not log them)
    remote_sdp: str  # the far end's SDP, from the trace ("" without sip_trace)
    workdir: Path

    def explain(self) -> str:
        return (f"baresip rc={self.returncode} established={self.established} ended_by={self.ended_by} "
                f"call_s={self.call_s} rtp_received={self.rtp_received}\n{self.log[-6000:]}")


_STATUS_LINE = re.compile(r"\[\d+:\d\d:\d\d\] audio=\S+ \(bit/s\)\s*")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class BaresipPeer:
    """baresip 1.0 from a temp config dir, driven through its stdio UI.

    Config written here: modules stdio (commands on stdin), g711, aufile (audio_source: the
    WAV it speaks), aubridge (a null audio_player: baresip 1.0's aufile has no player) and
    sndfile (dumps the decoded audio it hears); sip_listen 127.0.0.1:<free port>; rtp_ports
    fixed to one free even port, which an RtpRecorder sniffs to make wav_out; an account with
    regint=0 (no REGISTER). Dials with `-e "/dial <uri>"`, or answers (answermode=auto) when
    dial_uri is None.

    baresip 1.0 hangs up when its aufile source reaches the end of the file, so wav_in is
    converted to 8 kHz mono and padded with silence past `seconds`.
    """

    def __init__(self, dial_uri: str | None, *, wav_in: Path, wav_out: Path, seconds: float,
                 dtmf: str | None = None, dtmf_at_s: float | None = None, timeout_s: float | None = None,
                 sip_trace: bool = True, workdir: Path | None = None, user: str = "harness"):
        self.dial_uri = dial_uri
        self.wav_in, self.wav_out = Path(wav_in), Path(wav_out)
        self.seconds = seconds
        self.dtmf = dtmf
        self.dtmf_at_s = dtmf_at_s if dtmf_at_s is not None else (1.0 if dtmf else None)
        self.timeout_s = timeout_s or seconds + 20
        self.sip_trace = sip_trace
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="baresip-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.user = user
        self.sip_port = free_udp_port()
        self.rtp_port = free_udp_port(2)
        self.proc: asyncio.subprocess.Process | None = None
        self.recorder = RtpRecorder(self.rtp_port)
        self.lines: list[tuple[float, str]] = []
        self.established_at: float | None = None
        self.incoming = asyncio.Event()
        self._established = asyncio.Event()
        self._closed = asyncio.Event()
        self.call_end_at: float | None = None
        self._reader: asyncio.Future[None] | None = None

    @property
    def uri(self) -> str:
        """Where to call this peer (answer mode)."""
        return f"sip:{self.user}@{LOCALHOST}:{self.sip_port}"

    def _write_config(self) -> None:
        samples, rate = pcap.read_wav(self.wav_in)
        samples = pcap.resample(samples, rate, pcap.RATE)
        pad = int((self.seconds + 10) * pcap.RATE) - len(samples)
        if pad > 0:
            samples = np.concatenate([samples, np.zeros(pad, dtype=np.int16)])
        source = pcap.write_wav_pcm16(self.workdir / "source.wav", samples, pcap.RATE)
        (self.workdir / "dumps").mkdir(exist_ok=True)
        config = f"""\
poll_method		epoll
sip_listen		{LOCALHOST}:{self.sip_port}
call_local_timeout	{int(self.timeout_s) + 5}
call_max_calls		1
audio_player		aubridge,harness-null
audio_alert		aubridge,harness-null
audio_source		aufile,{source}
audio_level		no
ausrc_format		s16
auplay_format		s16
auenc_format		s16
audec_format		s16
rtp_ports		{self.rtp_port}-{self.rtp_port + 1}
rtcp_mux		no
jitter_buffer_delay	1-10
module_path		{BARESIP_MODULES}
module			stdio.so
module			g711.so
module			aufile.so
module			aubridge.so
module			sndfile.so
module_tmp		account.so
module_app		menu.so
snd_path		{self.workdir / "dumps"}
"""
        (self.workdir / "config").write_text(config)
        answer = "auto" if self.dial_uri is None else "manual"
        (self.workdir / "accounts").write_text(
            f"<sip:{self.user}@{LOCALHOST}:{self.sip_port}>;regint=0;answermode={answer};"
            "audio_codecs=pcmu,pcma;ptime=20\n")
        (self.workdir / "contacts").write_text("")

    async def start(self) -> BaresipPeer:
        if shutil.which(BARESIP) is None:
            raise RuntimeError("baresip is not installed")
        self._write_config()
        await self.recorder.start()
        # Line-buffered stdout (stdbuf): the call events are timed by when their lines arrive.
        cmd = (["stdbuf", "-oL", "-eL"] if shutil.which("stdbuf") else []) + [
            BARESIP, "-f", str(self.workdir), "-n", LOCALHOST]
        if self.sip_trace:
            cmd.append("-s")
        if self.dial_uri:
            cmd += ["-e", f"/dial {self.dial_uri}"]
        self._t0 = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            *cmd, cwd=self.workdir, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=dict(os.environ, HOME=str(self.workdir), TERM="dumb"))
        self._reader = asyncio.ensure_future(self._read_log())
        await _wait_udp_bound(self.sip_port, self.proc, 5.0)
        return self

    async def _read_log(self) -> None:
        assert self.proc and self.proc.stdout
        buf = b""
        while True:
            chunk = await self.proc.stdout.read(4096)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                self._line(raw.decode(errors="replace"))
        if buf:
            self._line(buf.decode(errors="replace"))
        self._closed.set()

    def _line(self, text: str) -> None:
        text = _STATUS_LINE.sub("", _ANSI.sub("", text)).rstrip()
        now = time.monotonic()
        self.lines.append((now, text))
        if "Incoming call from" in text or "answering call" in text:
            self.incoming.set()
        if "Call established" in text and self.established_at is None:
            self.established_at = now
            self._established.set()
        if ("terminated (duration" in text or "session closed" in text or "Call failed" in text
                or "call: could not" in text or "ua_connect failed" in text):
            self.call_end_at = self.call_end_at or now
            self._closed.set()

    async def _type(self, text: str) -> None:
        assert self.proc and self.proc.stdin
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.proc.stdin.write(text.encode())
            await self.proc.stdin.drain()

    async def run(self) -> BaresipResult:
        """Wait for the call, speak/listen for `seconds` (DTMF at dtmf_at_s), hang up, quit."""
        assert self.proc is not None
        deadline = self._t0 + self.timeout_s
        ended_by = "failed"
        dtmf_sent = ""
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                waits = [asyncio.ensure_future(self._established.wait()),
                         asyncio.ensure_future(self._closed.wait())]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()
                if self.established_at is not None and self.call_end_at is None:
                    hangup_at = self.established_at + self.seconds
                    if self.dtmf and self.dtmf_at_s is not None:
                        if not await self._sleep_until(self.established_at + self.dtmf_at_s):
                            for d in self.dtmf:
                                await self._type(d)  # stdio: key press; release 250 ms later
                                dtmf_sent += d
                                if await self._sleep_until(time.monotonic() + 0.4):
                                    break
                    if not await self._sleep_until(hangup_at):
                        await self._type("/hangup\n")
                        await self._closed.wait()
                        ended_by = "local"
                    else:
                        ended_by = "remote"
        except TimeoutError:
            ended_by = "timeout"
            await self._type("/hangup\n")  # a call still ringing or talking: end it first
        end_at = self.call_end_at or time.monotonic()
        await self._type("/quit\n")
        # baresip 1.0 waits on an unanswered INVITE before it quits: do not wait for that.
        await _stop_after(self.proc, 2.0 if ended_by == "timeout" else 5.0)
        if self._reader:
            await self._reader
        self.recorder.stop()
        established = self.established_at is not None
        if established:
            # From the answer (or the first RTP, if that came before the log line said so).
            first = min([self.established_at] + [p.t for p in self.recorder.packets[:1]])
            self.recorder.write_wav(self.wav_out, first, end_at)
        else:
            pcap.write_wav_pcm16(self.wav_out, np.zeros(0, dtype=np.int16))
        dumps = sorted((self.workdir / "dumps").glob("dump-*-dec.wav"))
        log = "\n".join(t for _, t in self.lines)
        return BaresipResult(self.proc.returncode, log, established, ended_by,
                             (end_at - self.established_at) if self.established_at else None,
                             self.wav_out, dumps[-1] if dumps else None, self.sip_port, self.rtp_port,
                             len(self.recorder.packets), dtmf_sent, self.recorder.digits(),
                             _remote_sdp(log, self.rtp_port),
                             self.workdir)

    async def _sleep_until(self, t: float) -> bool:
        """Sleep until monotonic t; True if the call ended first."""
        delay = t - time.monotonic()
        if delay > 0:
            try:
                await asyncio.wait_for(self._closed.wait(), delay)
            except TimeoutError:
                pass
        return self._closed.is_set()

    async def kill(self) -> None:
        if self.proc:
            await _stop(self.proc, signal.SIGKILL)
        self.recorder.stop()

    async def __aenter__(self) -> BaresipPeer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        if self.proc and self.proc.returncode is None:
            await self.kill()


async def _stop_after(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    try:
        await asyncio.wait_for(proc.wait(), grace_s)
    except TimeoutError:
        await _stop(proc, signal.SIGTERM, grace_s=2.0)


def _remote_sdp(log: str, own_rtp_port: int) -> str:
    """The last SDP in the SIP trace that is not baresip's own offer/answer."""
    bodies = re.findall(r"(v=0\n(?:[a-z]=.*\n?)+)", log)
    theirs = [b for b in bodies if f"m=audio {own_rtp_port} " not in b]
    return theirs[-1] if theirs else ""


async def run_baresip(dial_uri: str, *, wav_in: Path, wav_out: Path, seconds: float, dtmf: str | None = None,
                      dtmf_at_s: float | None = None, timeout_s: float | None = None, sip_trace: bool = True,
                      workdir: Path | None = None) -> BaresipResult:
    """Dial dial_uri with baresip, speak wav_in, record what comes back to wav_out.

    Hangs up `seconds` after the call is established (or ends when the far end hangs up).
    dtmf: digits typed into baresip at dtmf_at_s after the answer (default 1 s), 0.4 s apart;
    baresip sends them as RFC 4733 events only if the answer negotiated telephone-event.
    Killed after timeout_s (default seconds + 20).
    """
    peer = BaresipPeer(dial_uri, wav_in=wav_in, wav_out=wav_out, seconds=seconds, dtmf=dtmf,
                       dtmf_at_s=dtmf_at_s, timeout_s=timeout_s, sip_trace=sip_trace, workdir=workdir)
    async with peer:
        return await peer.run()


# --- malformed SIP -----------------------------------------------------------------------------

def garbage_sip_datagrams(target: str = "127.0.0.1:5060") -> list[bytes]:
    """Datagrams a SIP server must survive without crashing, leaking a call or hanging."""
    host, port = target.rsplit(":", 1)
    uri = f"sip:kombain@{host}:{port}"
    via = "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-garbage-{n}"
    good = (f"INVITE {uri} SIP/2.0\r\n{via}\r\nFrom: <sip:x@127.0.0.1>;tag=1\r\nTo: <{uri}>\r\n"
            "Call-ID: garbage-{n}@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:x@127.0.0.1:9>\r\n"
            "Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {clen}\r\n\r\n{body}")
    sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"

    def inv(n: int, clen: int | None = None, body: str = sdp) -> bytes:
        return good.format(n=n, clen=len(body) if clen is None else clen, body=body).encode()

    return [
        b"",
        b"\r\n\r\n",  # keep-alive: valid, must be ignored
        b"\x00" * 4,
        os.urandom(512),
        b"GARBAGE / SIP/2.0\r\n\r\n",
        b"INVITE\r\n\r\n",
        f"INVITE {uri} SIP/2.0\r\n".encode(),  # request line only
        f"INVITE {uri} SIP/3.0\r\n{via.format(n=1)}\r\n\r\n".encode(),  # wrong version
        inv(2).replace(b"Call-ID: garbage-2@127.0.0.1\r\n", b""),  # no Call-ID
        inv(3).replace(b"CSeq: 1 INVITE", b"CSeq: x INVITE"),  # bad CSeq
        inv(4).replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"),  # CSeq method mismatch
        inv(5, clen=5000),  # Content-Length past the end
        inv(6, clen=-1),
        inv(7, body="v=0\r\nthis is not sdp\r\n"),
        inv(8, body=sdp.replace("m=audio 9 RTP/AVP 0", "m=audio 99999 RTP/AVP 0")),
        inv(9, body=sdp.replace("RTP/AVP 0", "RTP/AVP 96\r\na=rtpmap:96 opus/48000/2")),  # no common codec
        inv(10).replace(b"\r\n", b"\n"),  # bare LF (legal to accept, must not crash)
        inv(11)[:200],  # truncated
        inv(12).replace(b"From: <sip:x@127.0.0.1>;tag=1", b"From: " + b"A" * 3000),  # huge header
        inv(13).replace(b"kombain", "k\u00f6mbain\udcff".encode("utf-8", "surrogateescape")),  # bad UTF-8
        f"SIP/2.0 200 OK\r\n{via.format(n=14)}\r\nCall-ID: nope\r\nCSeq: 1 INVITE\r\n\r\n".encode(),  # stray response
        f"BYE {uri} SIP/2.0\r\n{via.format(n=15)}\r\nFrom: <sip:x@127.0.0.1>;tag=1\r\nTo: <{uri}>;tag=2\r\n"
        "Call-ID: unknown-call@127.0.0.1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n".encode(),  # BYE, no dialog
        f"ACK {uri} SIP/2.0\r\n{via.format(n=16)}\r\nFrom: <sip:x@127.0.0.1>;tag=1\r\nTo: <{uri}>;tag=2\r\n"
        "Call-ID: unknown-ack@127.0.0.1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n".encode(),
        os.urandom(1400),
    ]


async def send_garbage_sip(target: str = "127.0.0.1:5060", datagrams: list[bytes] | None = None, *,
                           gap_s: float = 0.01, listen_s: float = 0.5) -> list[tuple[bytes, tuple[str, int]]]:
    """Send malformed SIP datagrams to target from one socket; return what came back
    (a well-behaved server answers some with 400 and ignores the rest)."""
    host, port = target.rsplit(":", 1)
    datagrams = garbage_sip_datagrams(target) if datagrams is None else datagrams
    replies: list[tuple[bytes, tuple[str, int]]] = []
    loop = asyncio.get_running_loop()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            replies.append((data, addr))

        def error_received(self, exc: Exception) -> None:  # ICMP unreachable: nothing listens
            pass

    transport, _ = await loop.create_datagram_endpoint(Proto, local_addr=(LOCALHOST, 0))
    try:
        for d in datagrams:
            transport.sendto(d, (host, int(port)))
            await asyncio.sleep(gap_s)
        await asyncio.sleep(listen_s)
    finally:
        transport.close()
    return replies


# --- network impairment ------------------------------------------------------------------------

class NetemUnavailable(RuntimeError):
    """tc cannot add a netem qdisc here (the kernel lacks sch_netem, or no CAP_NET_ADMIN)."""


@contextlib.contextmanager
def netem(dev: str = "lo", loss_pct: float = 0.0, delay_ms: float = 0.0, jitter_ms: float = 0.0) -> Iterator[str]:
    """`tc qdisc add dev <dev> root netem ...` for the block, removed after; yields the spec.

    On lo every packet passes the qdisc once, so both directions get the loss and delay.
    Refuses to run outside the test's own network namespace (KOMBAIN_NETNS_INNER=1): on the
    host it would slow down everything on loopback. Raises NetemUnavailable when the kernel
    has no netem ("Specified qdisc kind is unknown"): tests should skip then.
    """
    if not in_test_netns():
        raise RuntimeError(f"netem only runs inside the test network namespace ({NETNS_ENV}=1)")
    if shutil.which("tc") is None:
        raise NetemUnavailable("tc (iproute2) is not installed")
    args = ["netem"]
    if delay_ms or jitter_ms:
        args += ["delay", f"{delay_ms:g}ms"] + ([f"{jitter_ms:g}ms"] if jitter_ms else [])
    if loss_pct:
        args += ["loss", f"{loss_pct:g}%"]
    if args == ["netem"]:
        args += ["delay", "0ms"]
    subprocess.run(["tc", "qdisc", "del", "dev", dev, "root"], capture_output=True, timeout=10)
    add = subprocess.run(["tc", "qdisc", "add", "dev", dev, "root", *args], capture_output=True, text=True,
                         timeout=10)
    if add.returncode != 0:
        raise NetemUnavailable(f"tc qdisc add dev {dev} root {' '.join(args)}: {add.stderr.strip()}")
    try:
        yield " ".join(args)
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", dev, "root"], capture_output=True, timeout=10)


def netem_available(dev: str = "lo") -> str | None:
    """None if netem works on dev here, else why not (call only inside the test namespace)."""
    try:
        with netem(dev):
            return None
    except (NetemUnavailable, RuntimeError) as e:
        return str(e)
