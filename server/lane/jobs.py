"""The lane's job model: a pure record, its state machine and request validation (no I/O)."""

from __future__ import annotations

import enum
import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from kombain.server.errors import ApiError, error_body


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

# Allowed moves. RUNNING -> QUEUED is a retry (worker died or a transient failure).
_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.QUEUED, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}

# OpenAI's video object statuses for ours.
_VIDEO_STATUS = {
    JobStatus.QUEUED: "queued",
    JobStatus.RUNNING: "in_progress",
    JobStatus.SUCCEEDED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}

PRIORITIES = {"high": 0, "normal": 1, "low": 2}


class JobKind(enum.StrEnum):
    IMAGE = "image"
    VIDEO = "video"


class LaneError(ApiError):
    """A request the lane refuses; carries the HTTP status and OpenAI-style type and code."""

    def __init__(self, status: int, message: str, code: str, type_: str = "invalid_request_error",
                 param: str | None = None, retry_after_s: int | None = None) -> None:
        super().__init__(status, message, code, param, type_,
                         headers=None if retry_after_s is None else {"Retry-After": str(retry_after_s)})

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.code, self.param)


class InvalidTransition(Exception):
    """A status change the state machine does not allow (e.g. cancelling a finished job)."""


def check_transition(old: JobStatus, new: JobStatus) -> None:
    """Raise InvalidTransition unless `old -> new` is a legal move."""
    if new not in _TRANSITIONS[old]:
        raise InvalidTransition(f"job is {old.value}, cannot become {new.value}")


@dataclass(slots=True)
class Job:
    """One image or video job as stored by a queue back end."""

    id: str
    kind: JobKind
    model: str
    prompt: str
    params: dict[str, Any]
    priority: int = 1
    status: JobStatus = JobStatus.QUEUED
    step: int = 0
    steps: int = 0
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    results: list[str] = field(default_factory=list)
    attempts: int = 0
    worker: str = ""
    cancel_requested: bool = False

    @property
    def progress(self) -> int:
        """Percent done, 0-100."""
        if self.status is JobStatus.SUCCEEDED:
            return 100
        return int(100 * self.step / self.steps) if self.steps else 0

    def to_row(self) -> dict[str, str]:
        """Flat string mapping, for SQLite rows and Redis hashes alike."""
        d = asdict(self)
        return {k: json.dumps(v) for k, v in d.items()}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        d = {k: json.loads(v) if isinstance(v, str | bytes) else v for k, v in row.items()}
        d["kind"], d["status"] = JobKind(d["kind"]), JobStatus(d["status"])
        return cls(**{k: d[k] for k in cls.__slots__ if k in d})  # type: ignore[attr-defined]

    def public(self) -> dict[str, Any]:
        """The `GET /v1/jobs/{id}` body."""
        return {
            "id": self.id, "object": "job", "kind": self.kind.value, "model": self.model,
            "status": self.status.value, "priority": self.priority, "progress": self.progress,
            "step": self.step, "steps": self.steps, "created_at": int(self.created_at),
            "started_at": _int(self.started_at), "finished_at": _int(self.finished_at),
            "error": self.error, "results": len(self.results), "attempts": self.attempts,
            "worker": self.worker or None,
        }

    def video_object(self, retention_s: float) -> dict[str, Any]:
        """OpenAI's video object for this job."""
        p = self.params
        return {
            "id": self.id, "object": "video", "model": self.model,
            "status": _VIDEO_STATUS[self.status], "progress": self.progress,
            "created_at": int(self.created_at), "completed_at": _int(self.finished_at),
            "expires_at": _int(self.finished_at + retention_s) if self.finished_at else None,
            "size": f"{p['width']}x{p['height']}", "seconds": str(p.get("seconds", "")),
            "prompt": self.prompt,
            "error": {"code": "generation_failed", "message": self.error} if self.error else None,
        }


def _int(t: float | None) -> int | None:
    return None if t is None else int(t)


def new_job_id(kind: JobKind) -> str:
    return ("img_" if kind is JobKind.IMAGE else "video_") + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds a request is checked against (from Settings)."""

    max_size: int = 1024
    max_images: int = 4
    default_steps: int = 25
    max_steps: int = 150
    max_frames: int = 32
    fps: int = 8
    max_prompt_chars: int = 4000


def _ascii_digits(s: str) -> bool:
    # str.isdigit() is true for '１' and '²' too; int() takes the first and chokes on the second.
    return 0 < len(s) <= 12 and s.isascii() and s.isdigit()


def _show(value: Any) -> str:
    """A client's value for an error message, bounded."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def str_param(body: dict[str, Any], name: str, default: str | None = None, max_len: int = 256) -> str | None:
    """A string field: absent or null gives `default`; any other type or an over-long string is a 400."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise LaneError(400, f"{name} must be a string, got {type(value).__name__}", f"invalid_{name}", param=name)
    if len(value) > max_len:
        raise LaneError(400, f"{name} is over {max_len} characters", f"invalid_{name}", param=name)
    return value


def parse_size(size: Any, max_size: int) -> tuple[int, int]:
    """'WxH' -> (w, h): each a multiple of 8 in [8, max_size]."""
    if not isinstance(size, str) or size.lower().count("x") != 1:
        raise LaneError(400, f"size must be 'WIDTHxHEIGHT', got {_show(size)}", "invalid_size", param="size")
    w_s, h_s = size.lower().split("x")
    if not (_ascii_digits(w_s) and _ascii_digits(h_s)):
        raise LaneError(400, f"size must be 'WIDTHxHEIGHT', got {_show(size)}", "invalid_size", param="size")
    w, h = int(w_s), int(h_s)
    for v in (w, h):
        if v % 8 or not 8 <= v <= max_size:
            raise LaneError(
                400, f"size {_show(size)}: width and height must be multiples of 8 from 8 to {max_size}",
                "invalid_size", param="size",
            )
    return w, h


def parse_priority(value: Any) -> int:
    """'high' | 'normal' | 'low' or 0..2 -> 0 (first) .. 2 (last)."""
    if value is None:
        return 1
    if isinstance(value, str) and value in PRIORITIES:
        return PRIORITIES[value]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2:
        return value
    raise LaneError(400, "priority must be high, normal, low or 0-2", "invalid_priority", param="priority")


def check_prompt(prompt: Any, limits: Limits) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise LaneError(400, "prompt must be a non-empty string", "invalid_prompt", param="prompt")
    if len(prompt) > limits.max_prompt_chars:
        raise LaneError(400, f"prompt is {len(prompt)} characters, the limit is {limits.max_prompt_chars}",
                        "prompt_too_long", param="prompt")
    return prompt


def _int_param(body: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    v = body.get(name)
    if v is None:
        v = default
    elif isinstance(v, str) and _ascii_digits(v):  # form bodies send numbers as text
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise LaneError(400, f"{name} must be an integer from {lo} to {hi}", f"invalid_{name}", param=name)
    return v


def image_params(body: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """Validate an images/generations body; returns the job params."""
    w, h = parse_size(str_param(body, "size") or "512x512", limits.max_size)
    fmt = str_param(body, "response_format") or "b64_json"
    if fmt not in ("b64_json", "url"):
        raise LaneError(400, "response_format must be b64_json or url", "invalid_response_format",
                        param="response_format")
    params: dict[str, Any] = {
        "width": w, "height": h, "n": _int_param(body, "n", 1, 1, limits.max_images),
        "num_inference_steps": _int_param(body, "num_inference_steps", limits.default_steps, 1, limits.max_steps),
        "response_format": fmt,
    }
    return params | _common(body)


def video_params(body: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """Validate a /v1/videos body; frames come from `seconds` x fps unless `num_frames` is given."""
    w, h = parse_size(str_param(body, "size") or "512x512", limits.max_size)
    max_seconds = max(1, limits.max_frames // limits.fps)
    seconds = _int_param(body, "seconds", min(4, max_seconds), 1, max_seconds)
    frames = _int_param(body, "num_frames", seconds * limits.fps, 1, limits.max_frames)
    params: dict[str, Any] = {
        "width": w, "height": h, "seconds": seconds, "num_frames": frames, "fps": limits.fps,
        "num_inference_steps": _int_param(body, "num_inference_steps", limits.default_steps, 1, limits.max_steps),
    }
    return params | _common(body)


def _common(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    neg = str_param(body, "negative_prompt", max_len=4000)
    if neg is not None:
        out["negative_prompt"] = neg
    if body.get("seed") is not None:
        out["seed"] = _int_param(body, "seed", 0, 0, 2**32 - 1)
    return out


def resolve_model(requested: Any, kind: JobKind, configured: str) -> str:
    """Map a requested model name to the configured local pipeline; unknown names are a 4xx."""
    from pathlib import PurePath

    label = "image" if kind is JobKind.IMAGE else "video"
    if requested is not None and not isinstance(requested, str):
        raise LaneError(400, f"model must be a string, got {type(requested).__name__}", "invalid_model",
                        param="model")
    if not configured:
        var = "KOMBAIN_IMAGE_MODEL" if kind is JobKind.IMAGE else "KOMBAIN_VIDEO_MODEL"
        raise LaneError(503, f"no {label} model is configured: set {var} to a local diffusers "
                        "pipeline directory (saved with save_pretrained) and restart the server",
                        "model_not_configured", type_="server_error")
    local = PurePath(configured).name
    aliases = _ALIASES[kind] | {local, "default"}
    if requested in (None, "") or requested in aliases:
        return local
    raise LaneError(400, f"unknown {label} model {_show(requested)}; this server serves {local!r}",
                    "model_not_found", param="model")


_ALIASES = {
    JobKind.IMAGE: frozenset({"dall-e-2", "dall-e-3", "gpt-image-1"}),
    JobKind.VIDEO: frozenset({"sora-2", "sora-2-pro"}),
}
