"""The turn-taking benchmark's report (`python -m kombain.loadtest turns`): per-run summaries, the
tables, the plot of latency against cut-in rate, and the offline end-of-turn sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kombain.loadtest.stats import summary
from kombain.loadtest.turn_data import PAUSES_MS, RATE, DataSet, boundary


def plot(runs: list[dict[str, Any]], path: Path) -> Path | None:
    """Latency as heard (p50 and p95) against the cut-in rate into mid-sentence pauses, one point per
    transport (marker), mode (colour) and caller count (size): the trade-off each setting makes."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(8, 6))
    markers = {"websocket": "o", "webrtc": "s", "twilio": "^", "sip": "D"}
    modes = list(dict.fromkeys(run["mode"].split(" x")[0] for run in runs))
    colours = plt.get_cmap("tab10")
    for run in runs:
        m = run["summary"]
        if not m["latency"]["count"] or not m["cut_in"]["n"]:
            continue
        transport = run.get("transport", "websocket")
        mode = run["mode"].split(" x")[0]
        callers = run.get("callers", 1)
        # Points of one cut-in rate side by side: nudge by transport and caller count.
        x = 100 * m["cut_in"]["rate"] + 0.6 * list(markers).index(transport) + 0.15 * (callers - 1)
        name = f"{transport} {mode} x{callers}"
        ax.plot([x, x], [m["latency"]["p50_ms"], m["latency"]["p95_ms"]], marker=markers.get(transport, "o"),
                color=colours(modes.index(mode) % 10), alpha=1.0 if callers == 1 else 0.85,
                markersize=4 + callers / 2, label=f"{name} (n={m['latency']['count']})")
        ax.annotate(f"x{callers}", (x, m["latency"]["p95_ms"]), fontsize=7, xytext=(3, 2), textcoords="offset points")
    ax.axhline(500, color="grey", linestyle="-.", linewidth=0.8,
               label="p95 goal: phone 1 caller, WebSocket 4 callers (500 ms)")
    ax.axhline(400, color="grey", linestyle=":", label="p95 goal, WebSocket 1 caller (400 ms)")
    ax.axhline(250, color="grey", linestyle="--", label="p50 goal, WebSocket 1 caller (250 ms)")
    ax.set_xlabel("cut-in rate into 400-1200 ms mid-sentence pauses (%)")
    ax.set_ylabel("latency as heard (ms): p50 (lower dot) to p95")
    transports = sorted({run.get("transport", "websocket") for run in runs})
    ax.set_title(f"Turn-taking ({', '.join(transports)}): latency as heard against cut-ins", fontsize=10)
    ax.legend(fontsize=6, ncol=2 if len(ax.lines) > 14 else 1)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _rate(hits: int, n: int) -> dict[str, Any]:
    return {"n": n, "count": hits, "rate": round(hits / n, 3) if n else None}


def summarize(run: dict[str, Any]) -> dict[str, Any]:
    comp = run["complete"]
    lat = [r["latency_s"] for r in comp if r["latency_s"] is not None]
    sw = [r["server_timings_ms"]["silence_wait"] / 1000 for r in comp
          if "silence_wait" in (r.get("server_timings_ms") or {})]
    paused = run["paused"]
    by_pause = {str(p): _rate(sum(r["cut_in"] for r in paused if r["pause_ms"] == p),
                              sum(1 for r in paused if r["pause_ms"] == p)) for p in PAUSES_MS}
    reply = run["reply"]
    short = [r for r in reply if r["kind"] in ("word", "noise")]

    def cancelled(rs: list[dict[str, Any]]) -> int:
        return sum(r.get("outcome") == "cancelled" for r in rs)

    words = [r for r in short if r["kind"] == "word"]
    noises = [r for r in short if r["kind"] == "noise"]
    true = [r for r in reply if r["kind"] == "interrupt"]
    cut = [r for r in true if r.get("outcome") == "cancelled"]
    held = [r["held_s"] for r in short if r.get("outcome") == "resumed" and r.get("held_s") is not None]
    heard_gap = [r["heard_gap_s"] for r in short if r.get("outcome") == "resumed" and "heard_gap_s" in r]
    return {
        "latency": summary(lat),
        "latency_by_speech": {k: summary([r["latency_s"] for r in comp if r["latency_s"] is not None
                                          and r.get("speech") == k]) for k in ("sentence", "command")},
        "latency_timeouts": sum(r["latency_s"] is None for r in comp),
        "complete_split": _rate(sum(r["cut_in"] for r in comp), len(comp)),
        "server_silence_wait": summary(sw),
        "cut_in": _rate(sum(r["cut_in"] for r in paused), len(paused)),
        "cut_in_by_pause_ms": by_pause,
        "reply_in_pause": _rate(sum(bool(r.get("reply_in_pause")) for r in paused), len(paused)),
        "paused_latency": summary([r["latency_s"] for r in paused if r["latency_s"] is not None]),
        "false_interrupt": _rate(cancelled(short), len(short)),
        "false_interrupt_words": _rate(cancelled(words), len(words)),
        "false_interrupt_noise": _rate(cancelled(noises), len(noises)),
        "short_sound_stalled": sum(r.get("outcome") == "stalled" for r in short),
        "held_when_resumed": summary(held),
        "heard_gap_when_resumed": summary(heard_gap),
        "true_interrupt_missed": sum(r.get("outcome") == "resumed" for r in true),
        "true_interrupt_cancelled": _rate(len(cut), len(true)),
        "true_interrupt_heard": summary([r["heard_s"] for r in cut]),
        "true_interrupt_done": summary([r["done_s"] for r in cut]),
    }


# --- offline: the end-of-turn model on the same audio -------------------------------------------


def semantic_sweep(ds: DataSet) -> dict[str, Any] | None:
    """Smart Turn on each utterance as the server's checks would see it: 300 ms of lead-in, the speech,
    then 160 ms of silence (first check) and 560 / 960 ms (rechecks every 400 ms). For each threshold:
    complete utterances passing the first check, and mid-sentence pauses passing a check that falls
    inside the pause (check time + ~100 ms of inference < pause). With the transcript cue applied."""
    try:
        import soxr

        from kombain.streaming.end_of_turn import THRESHOLDS, complete_probability
        from kombain.streaming.smart_turn import WINDOW_SAMPLES, SmartTurnModel

        model = SmartTurnModel.load(None, threads=1)
    except Exception as exc:  # the model is optional on a node
        return {"error": repr(exc)}

    def p_at(audio: np.ndarray, silence_ms: int, text: str) -> float:
        x = np.concatenate([np.zeros(RATE * 3 // 10, np.float32), audio, np.zeros(RATE * silence_ms // 1000,
                                                                                    np.float32)])
        x16 = soxr.resample(x, RATE, 16000).astype(np.float32)[-WINDOW_SAMPLES:]
        return complete_probability(model.predict(x16), text)

    checks = (160, 560, 960)
    complete: list[dict[str, Any]] = []
    for c in ds.clips:
        text = " ".join(w for w, _, _ in c.words)
        complete.append({"clip": c.name, "p": [round(p_at(c.audio, ms, text), 3) for ms in checks]})
    paused: list[dict[str, Any]] = []
    for c in ds.clips:
        b = boundary(c)
        if b is None:
            continue
        k, cut = b
        text = " ".join(w for w, _, _ in c.words[:k])
        paused.append({"clip": c.name, "prefix": text, "p": [round(p_at(c.audio[:cut], ms, text), 3)
                                                             for ms in checks]})
    table = []
    for th in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        row: dict[str, Any] = {"threshold": th,
                               "complete_at_first_check": _rate(sum(u["p"][0] >= th for u in complete), len(complete))}
        for pause in PAUSES_MS:
            inside = [i for i, ms in enumerate(checks) if ms + 100 < pause]
            row[f"cut_in_{pause}ms"] = _rate(sum(any(u["p"][i] >= th for i in inside) for u in paused), len(paused))
        table.append(row)
    return {"server_thresholds": THRESHOLDS, "checks_ms": list(checks), "complete": complete, "paused": paused,
            "by_threshold": table}


# --- output ----------------------------------------------------------------------------------------


def _ms(s: dict[str, Any]) -> str:
    if not s.get("count"):
        return "-"
    return f"{s['p50_ms']:.0f} / {s['p95_ms']:.0f}"


def _held_cell(m: dict[str, Any]) -> str:
    held, gap = m["held_when_resumed"], m["heard_gap_when_resumed"]
    if not held.get("count"):
        return "-"
    return f"{_ms(held)} ({gap['p95_ms']:.0f})" if gap.get("count") else _ms(held)


def _pct(r: dict[str, Any]) -> str:
    return "-" if not r["n"] else f"{r['count']}/{r['n']} ({100 * r['rate']:.0f}%)"


def table(runs: list[dict[str, Any]]) -> str:
    head = ("| mode | interrupt min_speech_ms / min_words | latency p50 / p95 / p99 ms (n) | cut-in (paused) "
            "| false interruptions (words; noise) | reply held p50 / p95 ms (heard gap p95) | true interruptions cancelled "
            "| heard p50 / p95 ms | done p50 / p95 ms |")
    lines = [head, "|" + " --- |" * 9]
    for run in runs:
        m = run["summary"]
        lat = m["latency"]
        lat_s = f"{_ms(lat)} / {lat['p99_ms']:.0f} ({lat['count']})" if lat["count"] else "-"
        if m["latency_timeouts"]:
            lat_s += f", {m['latency_timeouts']} no reply"
        lines.append(
            f"| {run['mode']} | {run['interrupt']['min_speech_ms']} / {run['interrupt']['min_words']} | {lat_s} "
            f"| {_pct(m['cut_in'])} | {_pct(m['false_interrupt'])} ({_pct(m['false_interrupt_words'])}; "
            f"{_pct(m['false_interrupt_noise'])}) | {_held_cell(m)} "
            f"| {_pct(m['true_interrupt_cancelled'])} | {_ms(m['true_interrupt_heard'])} "
            f"| {_ms(m['true_interrupt_done'])} |")
    return "\n".join(lines)


def detail_table(runs: list[dict[str, Any]]) -> str:
    lines = ["| mode | server silence wait p50 / p95 ms | complete utterances split | cut-in at 400 / 800 / 1200 ms "
             "| reply started inside the pause | latency after a pause p50 / p95 ms |",
             "| --- | --- | --- | --- | --- | --- |"]
    for run in runs:
        m = run["summary"]
        if not run["complete"] and not run["paused"]:
            continue
        by = " / ".join(_pct(m["cut_in_by_pause_ms"][str(p)]) for p in PAUSES_MS)
        lines.append(f"| {run['mode']} | {_ms(m['server_silence_wait'])} | {_pct(m['complete_split'])} | {by} "
                     f"| {_pct(m['reply_in_pause'])} | {_ms(m['paused_latency'])} |")
    return "\n".join(lines)


def sweep_table(sweep: dict[str, Any]) -> str:
    lines = ["| threshold | complete: pass at the first check | cut-in 400 ms | cut-in 800 ms | cut-in 1200 ms |",
             "| --- | --- | --- | --- | --- |"]
    for row in sweep["by_threshold"]:
        lines.append(f"| {row['threshold']} | {_pct(row['complete_at_first_check'])} | {_pct(row['cut_in_400ms'])} "
                     f"| {_pct(row['cut_in_800ms'])} | {_pct(row['cut_in_1200ms'])} |")
    return "\n".join(lines)


def heard_table(runs: list[dict[str, Any]]) -> str:
    """One row per (transport, mode, callers): latency as heard (all complete utterances, then read
    sentences and short commands apart), the server's silence wait (where the transport reports it)
    and cut-ins into the mid-sentence pauses."""
    lines = ["| transport | mode | callers | load (1 min) | latency as heard p50 / p95 / p99 ms (n) "
             "| sentences / commands p50 / p95 ms | server silence wait p50 / p95 ms "
             "| cut-in into 400-1200 ms pauses (400 / 800 / 1200) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run in runs:
        if not run["complete"] and not run["paused"]:
            continue
        m = run["summary"]
        lat = m["latency"]
        lat_s = f"{_ms(lat)} / {lat['p99_ms']:.0f} ({lat['count']})" if lat["count"] else "-"
        if m["latency_timeouts"]:
            lat_s += f", {m['latency_timeouts']} no reply"
        by = ", ".join(_pct(m["cut_in_by_pause_ms"][str(p)]).split(" ")[0] for p in PAUSES_MS)
        cut = f"{_pct(m['cut_in']).split(' ')[0]} ({by})" if m["cut_in"]["n"] else "-"
        load = " -> ".join(f"{x:.1f}" for x in run.get("loadavg_1m", []))
        by_speech = m.get("latency_by_speech", {})
        kinds = " ; ".join(_ms(by_speech.get(k, {})) for k in ("sentence", "command"))
        lines.append(f"| {run.get('transport', 'websocket')} | {run['mode'].split(' x')[0]} | {run.get('callers', 1)} "
                     f"| {load} | {lat_s} | {kinds} | {_ms(m['server_silence_wait'])} | {cut} |")
    return "\n".join(lines)
