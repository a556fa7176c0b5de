"""`GET /v1/models`: the speech-recognition model, its OpenAI aliases, speech models and voices."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request

from kombain.server.auth import require_api_key
from kombain.server.openapi import AUTH_ERRORS, errors
from kombain.server.speech_api import model_entries
from kombain.server.transcriptions import STT_ALIASES

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["models"], responses=errors(*AUTH_ERRORS))


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    services = request.app.state.kombain.services
    now = int(time.time())
    data: list[dict[str, Any]] = []
    if "whisper" in services:
        data += [{"id": i, "object": "model", "owned_by": "kombain", "kind": "transcription"}
                 for i in (services["whisper"].name, *STT_ALIASES)]
    data += model_entries(services.get("tts"))
    for entry in data:
        entry.setdefault("created", now)
    return {"object": "list", "data": data}
