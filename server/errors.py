"""OpenAI-style error bodies for every HTTP error: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(Exception):
    """Raise from a handler to answer with an OpenAI-style error."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 type_: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.type = type_ or ("invalid_request_error" if status < 500 else "server_error")
        self.headers = with_retry_after(status, headers)

    def response(self) -> JSONResponse:
        return JSONResponse(error_body(self.message, self.type, self.code, self.param), self.status, headers=self.headers)


# Every "come back later" answer says when: clients and balancers back off instead of hammering.
RETRY_AFTER_S = {429: 5, 503: 2}


def with_retry_after(status: int, headers: dict[str, str] | None) -> dict[str, str] | None:
    """`headers` plus a default Retry-After on a 429 or 503 that has none."""
    default = RETRY_AFTER_S.get(status)
    if default is None or any(k.lower() == "retry-after" for k in headers or {}):
        return headers
    return {**(headers or {}), "Retry-After": str(default)}


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        code = {401: "invalid_api_key", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.status_code)
        return JSONResponse(error_body(str(exc.detail), type_, code), exc.status_code,
                            headers=with_retry_after(exc.status_code, getattr(exc, "headers", None)))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not the client's fault: Starlette still logs the traceback; the client gets the
        # error shape every OpenAI client parses instead of a plain-text "Internal Server Error".
        return JSONResponse(error_body("internal server error", "server_error", "internal_error"), 500)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "form"))
        return JSONResponse(error_body(f"{loc or 'request'}: {first.get('msg', 'invalid request')}",
                                       "invalid_request_error", "invalid_value", loc or None), 400)
