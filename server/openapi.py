"""The served OpenAPI document says what the server really answers.

Every error is the OpenAI error object (`Error` below), so each operation lists the 4xx/5xx codes it
can give with that schema instead of FastAPI's default 422 "HTTPValidationError", which this server
never sends (request validation answers 400: `errors.install`). Routes name their own codes with
`errors(...)`, those behind authentication with `AUTH_ERRORS` (a test checks that every `/v1` entry
does). The fuzz tests hold the server to the document (schemathesis' status code, content type and
schema conformance checks).
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import FastAPI
from pydantic import BaseModel, Field

__all__ = ["AUTH_ERRORS", "Error", "Readiness", "errors", "install", "request_body"]


class ErrorDetail(BaseModel):
    message: str = Field(description="What went wrong, for a person.")
    type: str = Field(description="invalid_request_error, rate_limit_error or server_error.")
    param: str | None = Field(description="The request field at fault, when there is one.")
    code: str | None = Field(description="A stable, machine-readable reason (e.g. invalid_api_key).")


class Error(BaseModel):
    """The body of every error answer, as OpenAI's API gives it."""

    error: ErrorDetail


class Readiness(BaseModel):
    """/readyz: `ready`, or why not (`loading`, `error`, `draining`, `full`)."""

    status: str
    models: list[str] | None = Field(None, description="Loaded models (when ready).")
    error: str | None = Field(None, description="Why loading failed (status `error`).")
    sessions: int | None = Field(None, description="Live sessions (status `full`).")


DESCRIPTIONS: Final = {
    400: "Invalid request: a malformed body, field or parameter (the field is named in `param`).",
    401: "No valid credential (API key, JWT or client secret) when authentication is on.",
    403: "The credential lacks the scope this entry needs, or a webhook signature is wrong.",
    404: "No such object (it never existed, or has ended or expired).",
    409: "The object's state does not allow this (e.g. a finished job, content not ready yet).",
    410: "The object's files were deleted (retention).",
    413: "The body, or the audio it decodes to, is over the configured limit.",
    429: "Over a per-key limit (requests per minute, concurrent calls, queued jobs); see Retry-After.",
    500: "The job ran and failed (its error is in the message).",
    503: "Not now: models still loading, the node draining or full, or the feature not configured; "
         "see Retry-After.",
    504: "The job did not finish within the wait; it goes on (poll it by its id).",
}

# What an entry behind authentication can answer (auth.require): no or a bad credential, a good one
# without the scope, over the per-key request rate. Routers and routes that depend on it list these.
AUTH_ERRORS: Final = (401, 403, 429)


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each code answered with the error object."""
    return {code: {"model": Error, "description": DESCRIPTIONS[code]} for code in codes}


def request_body(content: dict[str, type[BaseModel] | dict[str, Any]]) -> dict[str, Any]:
    """`openapi_extra=` for a route that reads its own body: the media types it takes, each with a
    flat model (no nested models: their $defs would not resolve inside the document) or a JSON
    schema, so clients (and the fuzz tests) know what to send."""
    schemas = {media: spec.model_json_schema() if isinstance(spec, type) else spec for media, spec in content.items()}
    return {"requestBody": {"required": True, "content": {m: {"schema": s} for m, s in schemas.items()}}}


def install(app: FastAPI) -> None:
    """Mend FastAPI's generated document: the 422 it adds to operations with parameters becomes
    the 400 this server answers, and every error is filed under application/json."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = generate()
        error_ref = {"$ref": "#/components/schemas/Error"}
        for operations in doc.get("paths", {}).values():
            for op in operations.values():
                responses = op.get("responses", {})
                if responses.pop("422", None) is not None and "400" not in responses:
                    responses["400"] = {"description": DESCRIPTIONS[400],
                                        "content": {"application/json": {"schema": error_ref}}}
                for response in responses.values():
                    # FastAPI files an error under the route's own media type (text/plain on
                    # /metrics); errors are always sent as JSON.
                    if any(c.get("schema") == error_ref for c in response.get("content", {}).values()):
                        response["content"] = {"application/json": {"schema": error_ref}}
        schemas = doc.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
