"""Lane HTTP API, OpenAI-compatible: images/generations, videos, plus jobs and their SSE progress."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from kombain.server import strict_json
from kombain.server.auth import require
from kombain.server.lane.jobs import (
    InvalidTransition,
    Job,
    JobKind,
    JobStatus,
    LaneError,
    check_prompt,
    image_params,
    new_job_id,
    parse_priority,
    resolve_model,
    video_params,
)
from kombain.server.lane.queue import QueueFull
from kombain.server.lane.service import LaneService
from kombain.server.openapi import AUTH_ERRORS, errors, request_body
from kombain.server.quotas import OverLimit, Quotas

MAX_BODY_BYTES = 256 * 1024
_POLL_S = 0.1


class _JobFields(BaseModel):
    """What both submissions take (the body may also be a form with the same fields)."""

    prompt: str = Field(min_length=1, description="What to draw; at most KOMBAIN_LANE_MAX_PROMPT_CHARS.")
    model: str | None = Field(None, description="A model id; the configured pipeline serves it.")
    size: str | None = Field(None, description="WIDTHxHEIGHT, multiples of 8 (default 512x512).",
                             examples=["512x512"])
    num_inference_steps: int | None = Field(None, ge=1)
    negative_prompt: str | None = Field(None, max_length=4000)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    priority: Literal["high", "normal", "low"] | int | None = Field(None, description="Or 0 (first) to 2.")


class ImageRequest(_JobFields):
    n: int | None = Field(None, ge=1)
    response_format: Literal["b64_json", "url"] | None = None


class VideoRequest(_JobFields):
    seconds: int | None = Field(None, ge=1)
    num_frames: int | None = Field(None, ge=1)


router = APIRouter(tags=["lane"], dependencies=[Depends(require("lane"))], responses=errors(*AUTH_ERRORS))


def _lane(request: Request) -> LaneService:
    lane: LaneService | None = request.app.state.kombain.services.lane
    if lane is None:
        raise LaneError(503, "the image/video lane is not running on this server (yet)",
                        "lane_unavailable", type_="server_error")
    return lane


async def _body(request: Request) -> dict[str, Any]:
    """JSON or form body, bounded in size (checked while reading, not after)."""
    too_large = LaneError(413, f"request body over {MAX_BODY_BYTES} bytes", "body_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise too_large
    ctype = request.headers.get("content-type", "")
    if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await _replay(request, bytes(raw)).form()
        return {k: v for k, v in form.items() if isinstance(v, str)}
    try:
        body = strict_json.loads(raw or b"{}")
    except strict_json.JsonInputError as exc:
        raise LaneError(400, f"body is not valid JSON: {exc}", exc.code) from None
    if not isinstance(body, dict):
        raise LaneError(400, "body must be a JSON object", "invalid_json")
    return body


def _replay(request: Request, raw: bytes) -> Request:
    """The same request with its body, already read, to be read again (by the form parser)."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    return Request(request.scope, receive)


async def _submit(request: Request, lane: LaneService, kind: JobKind, body: dict[str, Any]) -> Job:
    s = lane.settings
    model = resolve_model(body.get("model"), kind, s.image_model if kind is JobKind.IMAGE else s.video_model)
    prompt = check_prompt(body.get("prompt"), lane.limits)
    params = (image_params if kind is JobKind.IMAGE else video_params)(body, lane.limits)
    job = Job(id=new_job_id(kind), kind=kind, model=model, prompt=prompt, params=params,
              priority=parse_priority(body.get("priority")), steps=params["num_inference_steps"])
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= 256:
        raise LaneError(400, "Idempotency-Key must be 1-256 characters", "invalid_idempotency_key")
    quotas = request.app.state.kombain.quotas
    owner = request.state.principal.subject
    if quotas.max_queued_jobs > 0:
        await _check_owner_jobs(lane, quotas, owner)
    try:
        submitted = await lane.call(lane.queue.submit, job, key)
        await quotas.record_job(owner, submitted.id)
        return submitted  # type: ignore[no-any-return]
    except QueueFull as exc:
        lane.metrics.lane_submissions_rejected.inc()
        raise LaneError(429, f"the lane is full ({exc}); retry later", "queue_full",
                        type_="rate_limit_error", retry_after_s=10) from exc


async def _check_owner_jobs(lane: LaneService, quotas: Quotas, owner: str) -> None:
    """429 when the owner's unfinished jobs (submitted here, or anywhere with the shared limits
    store) reach KOMBAIN_KEY_MAX_QUEUED_JOBS."""
    unfinished = []
    recorded = await quotas.jobs_of(owner)
    for job_id in recorded:
        job = await lane.call(lane.queue.get, job_id)
        if job is not None and not job.status.finished:
            unfinished.append(job_id)
    try:
        await quotas.check_jobs(owner, recorded, unfinished)
    except OverLimit as exc:
        raise LaneError(429, exc.message, exc.code, type_="rate_limit_error", retry_after_s=exc.retry_after_s) from None


async def _get(lane: LaneService, job_id: str, kind: JobKind | None = None) -> Job:
    job = await lane.call(lane.queue.get, job_id) if len(job_id) <= 64 else None
    if job is None or (kind is not None and job.kind is not kind):
        raise LaneError(404, f"no {kind.value if kind else 'job'} with id {job_id!r}", "not_found",
                        param="id")
    return job


async def _cancel(lane: LaneService, job_id: str, kind: JobKind | None) -> Job:
    await _get(lane, job_id, kind)
    try:
        return await lane.call(lane.queue.request_cancel, job_id)
    except KeyError as exc:
        raise LaneError(404, f"no job with id {job_id!r}", "not_found", param="id") from exc
    except InvalidTransition as exc:
        raise LaneError(409, f"cannot cancel: {exc}", "job_finished") from exc


async def _result(lane: LaneService, job: Job, name: str) -> bytes:
    if job.status is not JobStatus.SUCCEEDED:
        raise LaneError(409, f"job {job.id} is {job.status.value}, it has no content yet", "not_ready")
    if name not in job.results:
        raise LaneError(404, f"job {job.id} has no file {name!r}", "not_found")
    data = await lane.call(lane.queue.get_result, job.id, name)
    if data is None:
        raise LaneError(410, f"the files of job {job.id} were deleted (retention)", "expired")
    return data


# --- images -----------------------------------------------------------------------------------
@router.post("/v1/images/generations", responses=errors(400, 409, 413, 500, 503, 504),
             openapi_extra=request_body({"application/json": ImageRequest}))
async def create_image(request: Request) -> JSONResponse:
    """Text to image; waits for the job like OpenAI does (up to the configured timeout)."""
    lane = _lane(request)
    job = await _submit(request, lane, JobKind.IMAGE, await _body(request))
    deadline = time.monotonic() + lane.settings.lane_image_timeout_s
    while not job.status.finished:
        if time.monotonic() > deadline:
            raise LaneError(504, f"image job {job.id} did not finish in time; follow it at "
                            f"/v1/jobs/{job.id}", "timeout", type_="server_error")
        await asyncio.sleep(_POLL_S)
        try:
            job = await _get(lane, job.id)
        except LaneError as exc:
            if exc.status != 503:  # the queue briefly unreachable: keep waiting
                raise
    if job.status is JobStatus.CANCELLED:
        raise LaneError(409, f"image job {job.id} was cancelled", "cancelled")
    if job.status is JobStatus.FAILED:
        raise LaneError(500, f"image job {job.id} failed: {job.error}", "generation_failed",
                        type_="server_error")
    data: list[dict[str, str]] = []
    for name in job.results:
        if job.params["response_format"] == "url":
            data.append({"url": str(request.url_for("job_file", job_id=job.id, name=name))})
        else:
            data.append({"b64_json": base64.b64encode(await _result(lane, job, name)).decode()})
    return JSONResponse({"created": int(job.created_at), "data": data, "id": job.id})


# --- videos -----------------------------------------------------------------------------------
@router.post("/v1/videos", responses=errors(400, 413, 503), openapi_extra=request_body({"application/json": VideoRequest}))
async def create_video(request: Request) -> JSONResponse:
    """Queue a text-to-video job; returns OpenAI's video object."""
    lane = _lane(request)
    job = await _submit(request, lane, JobKind.VIDEO, await _body(request))
    return JSONResponse(job.video_object(lane.queue.config.retention_s))


@router.get("/v1/videos/{video_id}", responses=errors(404, 503))
async def get_video(request: Request, video_id: str) -> JSONResponse:
    lane = _lane(request)
    job = await _get(lane, video_id, JobKind.VIDEO)
    return JSONResponse(job.video_object(lane.queue.config.retention_s))


@router.get("/v1/videos/{video_id}/content", response_class=Response,
            responses={200: {"content": {"video/mp4": {}}}, **errors(404, 409, 410, 503)})
async def get_video_content(request: Request, video_id: str) -> Response:
    lane = _lane(request)
    job = await _get(lane, video_id, JobKind.VIDEO)
    return Response(await _result(lane, job, job.results[0] if job.results else "0.mp4"),
                    media_type="video/mp4")


@router.delete("/v1/videos/{video_id}", responses=errors(404, 409, 503))
async def cancel_video(request: Request, video_id: str) -> JSONResponse:
    lane = _lane(request)
    job = await _cancel(lane, video_id, JobKind.VIDEO)
    return JSONResponse(job.video_object(lane.queue.config.retention_s))


# --- any job ----------------------------------------------------------------------------------
@router.get("/v1/jobs/{job_id}", responses=errors(404, 503))
async def get_job(request: Request, job_id: str) -> JSONResponse:
    return JSONResponse((await _get(_lane(request), job_id)).public())


@router.delete("/v1/jobs/{job_id}", responses=errors(404, 409, 503))
async def cancel_job(request: Request, job_id: str) -> JSONResponse:
    return JSONResponse((await _cancel(_lane(request), job_id, None)).public())


@router.get("/v1/jobs/{job_id}/files/{name}", name="job_file", response_class=Response,
            responses={200: {"content": {"image/png": {}, "video/mp4": {}}}, **errors(404, 409, 410, 503)})
async def job_file(request: Request, job_id: str, name: str) -> Response:
    lane = _lane(request)
    job = await _get(lane, job_id)
    media = "image/png" if name.endswith(".png") else "video/mp4"
    return Response(await _result(lane, job, name), media_type=media)


@router.get("/v1/jobs/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}, **errors(404, 503)})
async def job_events(request: Request, job_id: str) -> StreamingResponse:
    """Server-sent events: `progress` on every change, then one `done` with the final job."""
    lane = _lane(request)
    first = await _get(lane, job_id)

    async def stream() -> AsyncIterator[bytes]:
        job, last, last_sent = first, None, time.monotonic()
        while True:
            body = job.public()
            if body != last:
                event = "done" if job.status.finished else "progress"
                yield f"event: {event}\ndata: {json.dumps(body)}\n\n".encode()
                last, last_sent = body, time.monotonic()
                if job.status.finished:
                    return
            elif time.monotonic() - last_sent > 15:
                yield b": keep-alive\n\n"
                last_sent = time.monotonic()
            if await request.is_disconnected():
                return
            await asyncio.sleep(_POLL_S)
            try:
                job = await _get(lane, job_id)
            except LaneError as exc:
                if exc.status != 503:
                    raise
                # Queue briefly unreachable: keep the stream open and try again.

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})
