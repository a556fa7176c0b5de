"""Transcripts rendered as OpenAI's response formats: json, text, verbose_json, srt, vtt.

Word times (`timestamp_granularities` containing `word`) go into verbose_json's `words[]` as
OpenAI's do. SRT and VTT are kombain's own choice, as OpenAI documents none: `word` alone gives
one cue per word; `word` with `segment` gives segment cues, in VTT with an inline timestamp
(`<00:00:01.250>`) before each word after the first, in SRT (which has no inline timing) one
cue per word.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi.responses import JSONResponse, PlainTextResponse, Response

from kombain.streaming.whisper_runtime import DecodeResult, Segment, Word

FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
GRANULARITIES = ("word", "segment")


def render(result: DecodeResult, fmt: str, granularities: Sequence[str] = (), task: str = "transcribe") -> Response:
    """The response for `fmt` (one of FORMATS)."""
    words = "word" in granularities
    if fmt == "json":
        return JSONResponse({"text": result.text, "usage": _usage(result)})
    if fmt == "text":
        return PlainTextResponse(result.text + "\n")
    if fmt == "verbose_json":
        body: dict[str, Any] = {
            "task": task, "language": result.language, "duration": round(result.duration, 3),
            "text": result.text,
            "segments": [
                {"id": i, "seek": 0, "start": round(s.start, 3), "end": round(s.end, 3), "text": s.text, "tokens": [],
                 "temperature": 0.0, "avg_logprob": s.avg_logprob, "compression_ratio": s.compression_ratio,
                 "no_speech_prob": s.no_speech_prob}
                for i, s in enumerate(result.segments)
            ],
            "usage": _usage(result),
        }
        if words:
            body["words"] = [{"word": w.word.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
                             for w in all_words(result.segments)]
        return JSONResponse(body)
    cues = _cues(result.segments, granularities, inline=fmt == "vtt")
    if fmt == "srt":
        blocks = [f"{i}\n{ts(a, ',')} --> {ts(b, ',')}\n{text}\n" for i, (a, b, text) in enumerate(cues, 1)]
        return PlainTextResponse("\n".join(blocks), media_type="application/x-subrip")
    blocks = [f"{ts(a, '.')} --> {ts(b, '.')}\n{text}\n" for a, b, text in cues]
    return PlainTextResponse("WEBVTT\n\n" + "\n".join(blocks), media_type="text/vtt")


def all_words(segments: Sequence[Segment]) -> list[Word]:
    """Every word of the segments with text, in order."""
    return [w for s in segments for w in s.words if w.word.strip()]


def _cues(segments: Sequence[Segment], granularities: Sequence[str], inline: bool) -> list[tuple[float, float, str]]:
    if "word" not in granularities:
        return [(s.start, s.end, s.text) for s in segments]
    if "segment" in granularities and inline:
        cues = []
        for s in segments:
            ws = [w for w in s.words if w.word.strip()]
            if not ws:
                cues.append((s.start, s.end, s.text))
                continue
            text = ws[0].word.strip() + "".join(f" <{ts(w.start, '.')}>{w.word.strip()}" for w in ws[1:])
            cues.append((s.start, s.end, text))
        return cues
    return [(w.start, w.end, w.word.strip()) for w in all_words(segments)]


def _usage(result: DecodeResult) -> dict[str, Any]:
    return {"type": "duration", "seconds": round(result.duration, 3)}


def ts(seconds: float, sep: str) -> str:
    """hh:mm:ss,mmm (SRT) or hh:mm:ss.mmm (VTT)."""
    ms = int(round(max(0.0, seconds) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"
