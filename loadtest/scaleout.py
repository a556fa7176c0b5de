"""`python -m loadtest scaleout`: a small cluster in network namespaces, and what failures cost it.

Hosts (loadtest/netns.py): the balancer host (HAProxy, and the callers), two voice nodes
(`kombain serve`, KOMBAIN_QUEUE=redis, no lane workers of their own), Redis, two lane workers
(tiny diffusers pipelines on CPU). Under a steady, bounded load of realtime WebSocket calls through
HAProxy (each streams a recorded clip and waits for the echo reply) it runs:

  drain    SIGTERM one voice node: its live calls should finish, new calls go to the other one
  worker   kill -9 the lane worker running a video job: the other worker should finish the job
  kill9    kill -9 one voice node: only its live calls should be lost; how long HAProxy takes to
           mark it down is measured (stats socket, polled every 50 ms)

A call "refused" (HTTP 503, connection failure, or the node's `server_draining` refusal) is
retried after 0.3 s by the caller, as a client is told to; it counts as `failed` only if no node
served it. `dropped`: a call a node had started and lost before its reply ended.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets

from kombain.loadtest import netns
from kombain.loadtest.conversation import CHUNK_MS, RATE, load_clips

HAPROXY_PORT = 8080
NODE_PORT = 8000
REFUSAL_CODES = {"server_draining", "server_full", "server_not_ready"}
RETRY_S = 0.3
RETRIES = 8
CALL_TIMEOUT_S = 45.0

HAPROXY_CFG = """\
global
    stats socket {sock} mode 600 level admin
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h          # a call's WebSocket, once upgraded
    timeout client-fin 5s
    retries 2
    option redispatch 1
    retry-on conn-failure empty-response 503

frontend voice
    bind {gateway}:{port}
    default_backend nodes

backend nodes
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    http-response set-header X-Kombain-Node %s
    default-server inter 500ms fastinter 500ms downinter 1s fall 2 rise 2
{servers}
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("scaleout", help="HAProxy + 2 voice nodes + Redis + 2 lane workers in network namespaces; "
                                        "drain, kill -9 and worker-loss scenarios under load")
    p.add_argument("--quick", action="store_true", help="the reduced run of the test suite (fewer calls, short drain)")
    p.add_argument("--calls", type=int, default=None, help="most concurrent calls (default 4; --quick 2)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between new calls")
    p.add_argument("--after", type=float, default=None, help="seconds of load after each event (default 8; --quick 3)")
    p.add_argument("--drain-seconds", type=float, default=None, help="KOMBAIN_DRAIN_SECONDS (default 30; --quick 15)")
    p.add_argument("--job-steps", type=int, default=None, help="denoising steps of the video job (default 200; --quick 120)")
    p.add_argument("--audio", type=Path, default=Path("tests/data/speech"))
    p.add_argument("--out", type=Path, default=Path("loadtest/results"))
    p.add_argument("--work", type=Path, default=None, help="folder for logs and data (default: a new temp dir)")


def run(args: argparse.Namespace) -> int:
    q = args.quick
    args.calls = args.calls or (2 if q else 4)
    args.after = args.after if args.after is not None else (3.0 if q else 8.0)
    args.drain_seconds = args.drain_seconds if args.drain_seconds is not None else (15.0 if q else 30.0)
    args.job_steps = args.job_steps or (120 if q else 200)
    args.work = (args.work or Path(tempfile.mkdtemp(prefix="kombain-scaleout-"))).resolve()
    args.out, args.audio = args.out.resolve(), args.audio.resolve()
    if not netns.inside():
        reason = netns.permitted()
        if reason:
            print(f"scaleout: {reason}", file=sys.stderr)
            return 2
        argv = ["-m", "kombain.loadtest", "scaleout", "--calls", str(args.calls), "--interval", str(args.interval),
                "--after", str(args.after), "--drain-seconds", str(args.drain_seconds), "--job-steps",
                str(args.job_steps), "--audio", str(args.audio), "--out", str(args.out), "--work", str(args.work)]
        return netns.reexec_inside(argv + (["--quick"] if q else []))
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(args)
    t0 = time.monotonic()
    try:
        cluster.start()
        report: dict[str, Any] = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                                             if k != "func"},
                                  "startup_s": round(time.monotonic() - t0, 1)}
        report["scenarios"] = asyncio.run(_scenarios(cluster, args))
    finally:
        cluster.close()
    report["total_s"] = round(time.monotonic() - t0, 1)
    report["ok"] = all(s["ok"] for s in report["scenarios"])
    path = args.out / f"scaleout-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=1))
    _print(report)
    print(f"\nwrote {path}; logs in {args.work}")
    return 0 if report["ok"] else 1


# --- the cluster ----------------------------------------------------------------------------------
class Cluster:
    """The hosts and their processes; every method runs on the main thread (see netns.Host.popen)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.work = args, args.work
        self.lan = netns.Lan()
        self.redis_host = self.lan.add("kb-redis")
        self.node_hosts = {n: self.lan.add(f"kb-{n}") for n in ("node1", "node2")}
        self.worker_hosts = {w: self.lan.add(f"kb-{w}") for w in ("worker1", "worker2")}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.url = f"http://{self.lan.gateway}:{HAPROXY_PORT}"
        self.sock = self.work / "haproxy.sock"
        self.queue = f"redis://{self.redis_host.addr}:6379/0"
        self.video_model = ""

    def _env(self, name: str, extra: dict[str, str]) -> dict[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1", "KOMBAIN_DATA_DIR": str(self.work / name),
                "KOMBAIN_QUEUE": self.queue, "KOMBAIN_VIDEO_MODEL": self.video_model,
                "KOMBAIN_LANE_MAX_STEPS": "5000", "KOMBAIN_LOG_LEVEL": "info"} | extra

    def start(self) -> None:
        r = self.redis_host
        self.procs["redis"] = r.popen(["redis-server", "--bind", r.addr, "--port", "6379", "--save", "",
                                       "--appendonly", "no", "--protected-mode", "no", "--dir", str(self.work)],
                                      dict(os.environ), self.work / "redis.log")
        _wait(lambda: _tcp_open(r.addr, 6379), 20, "redis-server")
        # Built while the voice nodes load their models; the workers need it, the nodes only its path.
        self.video_model = str(self.work / "models" / "tiny-animatediff")
        for n in self.node_hosts:
            self.start_node(n)
        from kombain.loadtest.tiny_pipelines import build_video_pipeline

        build_video_pipeline(self.work / "models")
        for w, host in self.worker_hosts.items():
            env = self._env(w, {"KOMBAIN_LANE_THREADS": "1", "KOMBAIN_LANE_GATE": "0",
                                "KOMBAIN_LANE_RECLAIM_IDLE_S": "3"})
            self.procs[w] = host.popen([sys.executable, "-m", "kombain.server.cli", "worker", "--worker-id", w],
                                       env, self.work / f"{w}.log", cwd=Path.cwd())
        servers = "\n".join(f"    server {n} {h.addr}:{NODE_PORT} check" for n, h in self.node_hosts.items())
        cfg = self.work / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(sock=self.sock, gateway=self.lan.gateway, port=HAPROXY_PORT,
                                          servers=servers))
        log = open(self.work / "haproxy.log", "ab")
        self.procs["haproxy"] = subprocess.Popen(  # on the parent's own host, the bridge's .1
            ["setpriv", "--pdeathsig", "KILL", "--", "haproxy", "-db", "-f", str(cfg)],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        _wait(lambda: all(self.status(n) == "UP" for n in self.node_hosts), 240, "both voice nodes UP in HAProxy",
              check=self._alive)

    def start_node(self, name: str) -> None:
        env = self._env(name, {"KOMBAIN_LANE_WORKERS": "0", "KOMBAIN_DRAIN_SECONDS": str(self.args.drain_seconds),
                               "KOMBAIN_SIP_LISTEN": "", "KOMBAIN_AUDIOSOCKET_LISTEN": "",
                               "KOMBAIN_WYOMING_LISTEN": ""})
        host = self.node_hosts[name]
        self.procs[name] = host.popen([sys.executable, "-m", "kombain.server.cli", "serve", "--host", host.addr,
                                       "--port", str(NODE_PORT)], env, self.work / f"{name}.log", cwd=Path.cwd())

    def _alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited ({p.returncode}) during start-up; see {self.work}/{name}.log")

    def status(self, server: str) -> str:
        """HAProxy's view of a voice node: UP, DOWN, MAINT, 'UP 1/2' ... ('' before HAProxy answers)."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(str(self.sock))
                s.sendall(b"show stat\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
        except OSError:
            return ""
        lines = data.decode().splitlines()
        head = lines[0].lstrip("# ").split(",")
        for line in lines[1:]:
            row = dict(zip(head, line.split(","), strict=False))
            if row.get("pxname") == "nodes" and row.get("svname") == server:
                return row["status"]
        return ""

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 10
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.lan.close()


def _tcp_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def _wait(ok: Any, timeout: float, what: str, check: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check:
            check()
        if ok():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


# --- the callers ----------------------------------------------------------------------------------
@dataclass
class CallRecord:
    no: int
    start: float
    node: str = ""  # the node that served it (HAProxy's X-Kombain-Node)
    connected: float | None = None  # session.created received
    end: float | None = None
    outcome: str = ""  # completed | dropped | failed
    refusals: list[tuple[float, str]] = field(default_factory=list)
    error: str = ""


class Load:
    """New calls every `interval` s while fewer than `most` are live; each call retries refusals."""

    def __init__(self, url: str, clips: list[bytes], most: int, interval: float) -> None:
        self.ws_url = url.replace("http://", "ws://") + "/v1/realtime"
        self.clips, self.most, self.interval = clips, most, interval
        self.calls: list[CallRecord] = []
        self.stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def live_on(self, node: str) -> int:
        return sum(1 for c in self.calls if c.node == node and c.connected and not c.outcome)

    async def run(self) -> None:
        while not self.stop.is_set():
            if sum(1 for c in self.calls if not c.outcome) < self.most:
                rec = CallRecord(len(self.calls), time.monotonic())
                self.calls.append(rec)
                task = asyncio.create_task(self._call(rec, self.clips[rec.no % len(self.clips)]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.interval)
        await asyncio.gather(*self._tasks)

    async def _call(self, rec: CallRecord, clip: bytes) -> None:
        for _ in range(RETRIES):
            why = await self._attempt(rec, clip)
            if rec.outcome:
                rec.end = time.monotonic()
                return
            rec.refusals.append((time.monotonic(), why))
            await asyncio.sleep(RETRY_S)
        rec.outcome, rec.end = "failed", time.monotonic()

    async def _attempt(self, rec: CallRecord, clip: bytes) -> str:
        """One try: sets rec.outcome when a node took the call, else returns why it was refused."""
        try:
            async with websockets.connect(self.ws_url, open_timeout=10, max_size=2**24) as ws:
                rec.node = ws.response.headers.get("X-Kombain-Node", "?") if ws.response else "?"
                await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime"}}))
                mic = asyncio.create_task(_send_mic(ws, clip))
                try:
                    return await self._converse(ws, rec)
                finally:
                    mic.cancel()
        except (OSError, TimeoutError, websockets.exceptions.InvalidHandshake) as exc:
            if rec.connected:
                rec.outcome, rec.error = "dropped", repr(exc)
            return f"connect: {exc!r}"[:200]

    async def _converse(self, ws: Any, rec: CallRecord) -> str:
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                async for msg in ws:
                    e = json.loads(msg)
                    if e["type"] == "error":
                        code = e["error"].get("code") or ""
                        if code in REFUSAL_CODES and not rec.connected:
                            return code
                        rec.error = code or e["error"].get("message", "")
                    elif e["type"] == "session.created":
                        rec.connected = time.monotonic()
                    elif e["type"] == "response.done" and e["response"]["status"] == "completed":
                        rec.outcome = "completed"
                        return ""
        except websockets.exceptions.ConnectionClosed as exc:
            rec.error = rec.error or f"closed {exc.rcvd.code if exc.rcvd else '?'}"
        except TimeoutError:
            rec.error = "no reply in time"
        if rec.connected:
            rec.outcome = "dropped"
            return ""
        return rec.error or "closed before the session started"


async def _send_mic(ws: Any, clip: bytes) -> None:
    """The clip at 1x, then silence, in 20 ms appends paced by the clock."""
    step = RATE * CHUNK_MS // 1000 * 2
    chunks = [clip[i:i + step].ljust(step, b"\0") for i in range(0, len(clip), step)]
    t0, n = time.monotonic(), 0
    with contextlib.suppress(websockets.exceptions.ConnectionClosed):
        while True:
            chunk = chunks[n] if n < len(chunks) else bytes(step)
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()}))
            n += 1
            await asyncio.sleep(max(0.0, t0 + n * CHUNK_MS / 1000 - time.monotonic()))


# --- the scenarios --------------------------------------------------------------------------------
async def _scenarios(c: Cluster, args: argparse.Namespace) -> list[dict[str, Any]]:
    clips = load_clips(args.audio)
    out = [await _drain(c, args, clips, "node1")]
    c.start_node("node1")  # back for the kill -9 scenario; it loads while the lane scenario runs
    out.append(await _worker_loss(c, args, clips))
    await _until(lambda: all(c.status(n) == "UP" for n in c.node_hosts), 240, "node1 UP again")
    out.append(await _kill9(c, args, clips, "node2"))
    return out


async def _until(ok: Any, within: float, what: str, every: float = 0.1) -> float:
    """Poll until ok(); returns when (monotonic)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if ok():
            return time.monotonic()
        await asyncio.sleep(every)
    raise RuntimeError(f"timed out waiting for {what}")


async def _under_load(c: Cluster, args: argparse.Namespace, clips: list[bytes], event: Any) -> tuple[Load, Any]:
    """Start the load, run `event(load)` once calls are live, keep the load `args.after` s more, then
    let the live calls finish. Returns the load and what the event returned."""
    load = Load(c.url, clips, args.calls, args.interval)
    runner = asyncio.create_task(load.run())
    try:
        result = await event(load)
        await asyncio.sleep(args.after)
    finally:
        load.stop.set()
        await runner
    return load, result


def _counts(load: Load, t_event: float) -> dict[str, Any]:
    calls = load.calls
    per_node: dict[str, dict[str, int]] = {}
    for rec in calls:
        if rec.outcome != "failed":
            per_node.setdefault(rec.node, {}).setdefault(rec.outcome, 0)
            per_node[rec.node][rec.outcome] += 1
    refusals = sorted(t for rec in calls for t, _ in rec.refusals if t >= t_event)
    return {
        "attempted": len(calls), "completed": sum(r.outcome == "completed" for r in calls),
        "refused": sum(len(r.refusals) for r in calls), "dropped": sum(r.outcome == "dropped" for r in calls),
        "failed": sum(r.outcome == "failed" for r in calls), "per_node": per_node,
        "refusal_window_s": round(refusals[-1] - refusals[0], 2) if refusals else 0.0,
        "last_refusal_after_event_s": round(refusals[-1] - t_event, 2) if refusals else None,
        "refusal_reasons": sorted({why for r in calls for _, why in r.refusals})[:5],
        "calls": [asdict(r) | {"refusals": len(r.refusals)} for r in calls],
    }


def _live_at(load: Load, node: str, t: float) -> list[CallRecord]:
    return [r for r in load.calls if r.node == node and r.connected and r.connected <= t and (r.end or 1e18) > t]


async def _drain(c: Cluster, args: argparse.Namespace, clips: list[bytes], victim: str) -> dict[str, Any]:
    proc = c.procs[victim]

    async def event(load: Load) -> dict[str, Any]:
        await _until(lambda: load.live_on(victim) >= 1, 60, f"a live call on {victim}")
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        exited.append(asyncio.create_task(_until(lambda: proc.poll() is not None, args.drain_seconds + 30,
                                                  f"{victim} to exit")))
        down = await _until(lambda: c.status(victim).startswith("DOWN"), 30, f"{victim} DOWN", every=0.05)
        return {"t": t, "down_after_s": round(down - t, 2)}

    exited: list[asyncio.Task[float]] = []
    load, ev = await _under_load(c, args, clips, event)
    exit_at = await exited[0]
    res = _counts(load, ev["t"])
    at_signal = _live_at(load, victim, ev["t"])
    res |= {"scenario": "drain", "node": victim, "balancer_down_after_s": ev["down_after_s"],
            "exit_after_s": round(exit_at - ev["t"], 1), "exit_code": proc.returncode,
            "live_on_node_at_signal": len(at_signal),
            "of_those_completed": sum(r.outcome == "completed" for r in at_signal),
            "new_calls_served_by_node_after": sum(1 for r in load.calls if r.node == victim
                                                  and r.connected and r.connected > ev["t"])}
    res["ok"] = (res["dropped"] == 0 and res["failed"] == 0 and res["of_those_completed"] == len(at_signal) > 0
                 and res["new_calls_served_by_node_after"] == 0 and proc.returncode == 0)
    return res


async def _kill9(c: Cluster, args: argparse.Namespace, clips: list[bytes], victim: str) -> dict[str, Any]:
    proc = c.procs[victim]
    others = [n for n in c.node_hosts if n != victim]

    async def event(load: Load) -> dict[str, Any]:
        await _until(lambda: load.live_on(victim) >= 1 and all(load.live_on(o) >= 1 for o in others), 60,
                     "live calls on both nodes")
        t = time.monotonic()
        proc.kill()
        down = await _until(lambda: c.status(victim).startswith("DOWN"), 30, f"{victim} DOWN", every=0.05)
        return {"t": t, "down_after_s": round(down - t, 2)}

    load, ev = await _under_load(c, args, clips, event)
    res = _counts(load, ev["t"])
    at_kill = _live_at(load, victim, ev["t"])
    lost_elsewhere = [r.no for r in load.calls if r.outcome == "dropped" and r.node != victim]
    res |= {"scenario": "kill9", "node": victim, "balancer_down_after_s": ev["down_after_s"],
            "live_on_node_at_kill": len(at_kill), "lost_on_other_nodes": len(lost_elsewhere),
            "new_calls_served_by_node_after": sum(1 for r in load.calls if r.node == victim
                                                  and r.connected and r.connected > ev["t"])}
    res["ok"] = (not lost_elsewhere and res["failed"] == 0 and res["dropped"] <= len(at_kill)
                 and res["new_calls_served_by_node_after"] == 0)
    return res


async def _worker_loss(c: Cluster, args: argparse.Namespace, clips: list[bytes]) -> dict[str, Any]:
    http = httpx.AsyncClient(base_url=c.url, timeout=10)
    body = {"prompt": "a bird", "size": "32x32", "num_frames": 4, "num_inference_steps": args.job_steps}

    async def job(job_id: str) -> dict[str, Any]:
        r = await http.get(f"/v1/jobs/{job_id}")
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    async def event(load: Load) -> dict[str, Any]:
        r = await http.post("/v1/videos", json=body)
        r.raise_for_status()
        jid = r.json()["id"]
        deadline = time.monotonic() + 120
        first = await job(jid)
        while first["step"] < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            first = await job(jid)
        t = time.monotonic()
        c.procs[first["worker"]].kill()
        taken = None
        done = first
        deadline = t + 240
        while done["status"] not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            done = await job(jid)
            if taken is None and done["worker"] not in ("", first["worker"]):
                taken = time.monotonic()
        content = await http.get(f"/v1/videos/{jid}/content") if done["status"] == "succeeded" else None
        return {"t": t, "job": jid, "killed": first["worker"], "killed_at_step": first["step"],
                "status": done["status"], "finished_by": done["worker"], "attempts": done["attempts"],
                "reclaimed_after_s": round(taken - t, 1) if taken else None,
                "finished_after_s": round(time.monotonic() - t, 1),
                "video_ok": bool(content and content.status_code == 200 and content.content[4:8] == b"ftyp")}

    try:
        load, ev = await _under_load(c, args, clips, event)
    finally:
        await http.aclose()
    res = _counts(load, ev["t"]) | {"scenario": "worker", "jobs_submitted": 1,
                                    "jobs_lost": int(ev["status"] != "succeeded")}
    res |= {k: v for k, v in ev.items() if k != "t"}
    res["ok"] = (res["jobs_lost"] == 0 and ev["video_ok"] and ev["finished_by"] != ev["killed"]
                 and res["dropped"] == 0 and res["failed"] == 0)
    return res


def _print(report: dict[str, Any]) -> None:
    print(f"\n== scaleout: 2 voice nodes behind HAProxy, Redis, 2 lane workers (start-up {report['startup_s']} s, "
          f"total {report['total_s']} s)")
    print(f"{'scenario':9s} {'attempted':>9s} {'completed':>9s} {'refused':>7s} {'dropped':>7s} {'failed':>6s}  "
          f"{'jobs sub/lost':>13s}  {'LB down after':>13s}  ok")
    for s in report["scenarios"]:
        jobs = f"{s['jobs_submitted']}/{s['jobs_lost']}" if "jobs_submitted" in s else "-"
        down = f"{s['balancer_down_after_s']:.2f} s" if "balancer_down_after_s" in s else "-"
        print(f"{s['scenario']:9s} {s['attempted']:9d} {s['completed']:9d} {s['refused']:7d} {s['dropped']:7d} "
              f"{s['failed']:6d}  {jobs:>13s}  {down:>13s}  {'yes' if s['ok'] else 'NO'}")
    for s in report["scenarios"]:
        extra = {k: v for k, v in s.items() if k not in ("calls", "scenario", "attempted", "completed", "refused",
                                                          "dropped", "failed", "ok")}
        print(f"  {s['scenario']}: {json.dumps(extra)}")
