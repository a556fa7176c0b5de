"""`GET /v1/models` and `GET /v1/models/{id}`: the served speech-recognition model, the OpenAI
names that map onto it and onto Piper (server/model_aliases.py), and each voice."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from kombain.server import model_aliases
from kombain.server.auth import require_api_key
from kombain.server.errors import ApiError
from kombain.server.openapi import AUTH_ERRORS, errors

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["models"], responses=errors(*AUTH_ERRORS))


def _entries(request: Request) -> list[dict[str, Any]]:
    services = request.app.state.kombain.services
    stt, pool = services.stt, services.tts
    return model_aliases.entries(
        stt.whisper.name if stt is not None else None,
        [v.id for v in pool.voices()] if pool is not None else None,
        int(time.time()),
    )


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    """Every listed model; `served_by` names the model that answers for it."""
    return {"object": "list", "data": _entries(request)}


@router.get("/v1/models/{model_id:path}", responses=errors(404))
async def retrieve_model(request: Request, model_id: str) -> JSONResponse:
    """One listed model; 404 (`model_not_found`) for a name not listed (transcription and speech
    still accept it: see server/model_aliases.py)."""
    for entry in _entries(request):
        if entry["id"] == model_id:
            return JSONResponse(entry)
    raise ApiError(404, f"The model '{model_id[:200]}' does not exist", "model_not_found")
