"""Liveness, readiness and Prometheus metrics endpoints (open; /metrics admin-only with KOMBAIN_METRICS_AUTH)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from kombain.server.auth import require_metrics
from kombain.server.openapi import AUTH_ERRORS, Readiness, errors

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and its event loop answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={200: {"model": Readiness}, 503: {"model": Readiness, "description":
            "Not ready: loading, failed to load, draining or full (see Retry-After)"}})
async def readyz(request: Request) -> JSONResponse:
    """Ready once models are loaded, and while the node is not full or draining."""
    st = request.app.state.kombain
    if st.load_error:
        return JSONResponse({"status": "error", "error": st.load_error}, status_code=503)
    if not st.ready.is_set():
        return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "2"})
    if st.draining:
        return JSONResponse({"status": "draining"}, status_code=503, headers={"Retry-After": "5"})
    if st.host.full:
        return JSONResponse({"status": "full", "sessions": st.host.count}, status_code=503,
                            headers={"Retry-After": "5"})
    return JSONResponse({"status": "ready", "models": sorted(st.services.model_names)})


@router.get("/metrics", dependencies=[Depends(require_metrics)], response_class=PlainTextResponse,
            responses=errors(*AUTH_ERRORS))  # only with KOMBAIN_METRICS_AUTH
async def metrics(request: Request) -> Response:
    st = request.app.state.kombain
    return Response(st.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
