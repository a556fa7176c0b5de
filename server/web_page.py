"""The browser call page: `/` serves clients/web/index.html, `/web/*` its scripts and styles,
`/favicon.ico` its icon (an SVG) for the browsers and pages that ask there."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

import kombain.clients as clients

WEB_DIR = Path(clients.__file__).resolve().parent / "web"


def install(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(WEB_DIR / "favicon.svg", media_type="image/svg+xml",
                            headers={"Cache-Control": "max-age=86400"})

    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")
