"""`POST /v1/realtime/calls`: WebRTC calls, SDP offer in, SDP answer out (OpenAI's shape).

The body is the offer (`Content-Type: application/sdp`) or OpenAI's multipart form with `sdp`
and an optional `session` (a session.update payload, as JSON); `?responder=echo|script|openai`
(extension) picks the call's responder among those this node can run (the config lists them).
The answer comes back with 201, `Content-Type: application/sdp` and
`Location: /v1/realtime/calls/{id}`; `DELETE` there hangs up.
Calls run as tasks owned by `CallManager`, which ends them all when the app shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from kombain.server import strict_json
from kombain.server.auth import Principal, require
from kombain.server.errors import ApiError
from kombain.server.host import CallHost, CallRefused
from kombain.server.metrics import Metrics
from kombain.server.openapi import AUTH_ERRORS, errors, request_body
from kombain.server.quotas import OverLimit
from kombain.server.responders import KINDS, build_responder
from kombain.server.settings import Settings
from kombain.server.transports.openai_realtime.protocol import (
    ProtocolError,
    SessionConfig,
    apply_session_update,
)
from kombain.server.transports.webrtc.call import WebRTCCall
from kombain.server.transports.webrtc.ice import (
    ice_servers_json,
    parse_hosts,
    parse_ice_servers,
    restrict_host_addresses,
)
from kombain.server.transports.webrtc.sdp import SdpError, check_offer

router = APIRouter(tags=["webrtc"])
log = logging.getLogger("kombain.webrtc")


class CallManager:
    """The node's live WebRTC calls and the tasks that run them."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.ice_servers = parse_ice_servers(settings.webrtc_ice_servers)
        self._calls: dict[str, WebRTCCall] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, call_id: str) -> WebRTCCall | None:
        return self._calls.get(call_id)

    @property
    def count(self) -> int:
        return len(self._calls)

    def start(self, call: WebRTCCall, host: CallHost, on_end: Callable[[], None] | None = None) -> None:
        self._calls[call.id] = call

        async def life() -> None:
            try:
                await call.run(host)
            finally:
                self._calls.pop(call.id, None)
                if on_end is not None:
                    on_end()

        task = asyncio.create_task(life(), name=f"webrtc-{call.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self, deadline_s: float = 5.0) -> None:
        """Hang up every call and wait (bounded) for them to release what they hold."""
        for call in list(self._calls.values()):
            call.end("server_shutdown")
        tasks = list(self._tasks)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=deadline_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


async def _read_offer(request: Request, max_bytes: int) -> tuple[bytes, dict[str, Any] | None]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await request.form(max_files=0, max_fields=4, max_part_size=max_bytes)
        sdp, raw_session = form.get("sdp"), form.get("session")
        if not isinstance(sdp, str):
            raise SdpError("the multipart form needs an 'sdp' field with the offer")
        session = None
        if isinstance(raw_session, str) and raw_session.strip():
            try:
                session = strict_json.loads(raw_session)
            except strict_json.JsonInputError as exc:
                raise SdpError(f"the 'session' field is not valid JSON: {exc}", "invalid_value") from None
        return sdp.encode(), session
    if ctype not in ("application/sdp", "text/plain", ""):
        raise SdpError(f"unsupported Content-Type {ctype!r}; send application/sdp or multipart/form-data",
                       "unsupported_media_type")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise SdpError(f"SDP offer exceeds {max_bytes} bytes", "sdp_too_large")
    return bytes(body), None


_voice = require("voice", realtime=True)  # a client secret from /v1/realtime/client_secrets will do


@router.post("/v1/realtime/calls", status_code=201,
             responses={201: {"content": {"application/sdp": {}}}, **errors(*AUTH_ERRORS, 400, 503)},
             openapi_extra=request_body({
                 "application/sdp": {"type": "string", "description": "The SDP offer"},
                 "multipart/form-data": {"type": "object", "required": ["sdp"], "properties": {
                     "sdp": {"type": "string"}, "session": {"type": "string", "description": "JSON session"}}}}))
async def create_call(request: Request, principal: Annotated[Principal, Depends(_voice)],
                      responder: Annotated[str | None, Query(
                          description="the call's responder (extension): echo, script or openai, "
                                      "where this node can run it; default KOMBAIN_RESPONDER")] = None,
                      ) -> Response:
    """Answer a WebRTC offer; the call runs until either side hangs up."""
    state = request.app.state.kombain
    settings: Settings = state.settings
    host: CallHost = state.host
    if responder is not None and responder not in available_responders(state):
        raise ApiError(400, f"responder {responder[:40]!r} is not available on this node; "
                            f"use one of {', '.join(available_responders(state))}", "invalid_value", "responder")
    try:
        host.admit("webrtc")
    except CallRefused as exc:
        raise ApiError(503, str(exc), exc.code, headers={"Retry-After": str(exc.retry_after_s)}) from None
    release = await _open_call(state, principal)
    try:
        return await _answer(request, state, settings, host, principal, release, responder)
    except BaseException:
        release()
        raise


async def _open_call(state: Any, principal: Principal) -> Callable[[], None]:
    try:
        return await state.quotas.open_call(principal.subject)  # type: ignore[no-any-return]
    except OverLimit as exc:
        raise ApiError(429, exc.message, exc.code, type_="rate_limit_error",
                       headers={"Retry-After": str(exc.retry_after_s)}) from None


def available_responders(state: Any) -> list[str]:
    """The responders a call may ask for here: echo always, the IVR when a script is loaded, the LLM
    when KOMBAIN_RESPONDER_URL is set (the node's own default always)."""
    s: Settings = state.settings
    script = state.services.ivr_script
    return [k for k in KINDS if k == s.responder or k == "echo" or (k == "script" and script is not None)
            or (k == "openai" and s.responder_url)]


async def _answer(request: Request, state: Any, settings: Settings, host: CallHost, principal: Principal,
                  release: Callable[[], None], responder: str | None = None) -> Response:
    manager: CallManager | None = state.services.transports.get("webrtc", CallManager)
    if manager is None:
        raise ApiError(503, "WebRTC is not available on this node (still loading, or disabled)",
                       "server_not_ready", headers={"Retry-After": "2"})
    try:
        raw, session_cfg = await _read_offer(request, settings.webrtc_max_offer_bytes)
        offer, info = check_offer(raw, settings.webrtc_max_offer_bytes)
        if session_cfg is not None:
            apply_session_update(SessionConfig(), session_cfg, "session.update")  # 400 now, not later
    except SdpError as exc:
        raise ApiError(400, str(exc), exc.code, "sdp") from None
    except ProtocolError as exc:
        raise ApiError(400, str(exc), exc.code, exc.param) from None

    preset = principal.session or {}  # a client secret's session, under the offer's own
    kind = "transcription" if (session_cfg or preset).get("type") == "transcription" else "realtime"
    chosen = (build_responder(settings.replace(responder=responder), state.services.ivr_script)
              if responder is not None and kind == "realtime" else None)
    call = WebRTCCall(settings, state.metrics, manager.ice_servers, kind=kind, events=info.has_data_channel,
                      responder=chosen)
    try:
        if preset:
            with contextlib.suppress(ProtocolError):
                call.session.config = apply_session_update(call.session.config, preset, "session.update")
        if session_cfg is not None:
            call.session.handle_event({"type": "session.update", "session": session_cfg})
        answer = await call.answer(offer)
    except BaseException as exc:
        await call.discard()
        if isinstance(exc, SdpError):
            raise ApiError(400, str(exc), exc.code, "sdp") from None
        raise
    manager.start(call, host, release)
    log.info("call %s (session %s) answered; codecs %s", call.id, call.session.id, ",".join(info.audio_codecs))
    return Response(answer, status_code=201, media_type="application/sdp",
                    headers={"Location": f"/v1/realtime/calls/{call.id}"})


@router.delete("/v1/realtime/calls/{call_id}", status_code=204, dependencies=[Depends(_voice)],
                responses=errors(*AUTH_ERRORS, 404))
async def hang_up(call_id: str, request: Request) -> Response:
    """End a call; returns once its resources are released (at most a few seconds)."""
    manager: CallManager | None = request.app.state.kombain.services.transports.get("webrtc", CallManager)
    call = manager.get(call_id) if manager is not None else None
    if call is None:
        raise ApiError(404, f"no call {call_id!r} (already ended, or never existed)", "not_found", "call_id")
    call.end("hangup_client")
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            await call.wait_closed()
    return Response(status_code=204)


@router.get("/v1/realtime/calls/config", dependencies=[Depends(_voice)], responses=errors(*AUTH_ERRORS))
async def call_config(request: Request) -> JSONResponse:
    """What the browser page needs to place a call: the ICE servers to use, the data channel's label,
    the responders a call may ask for (`?responder=`) and the node's default."""
    state = request.app.state.kombain
    manager: CallManager | None = state.services.transports.get("webrtc", CallManager)
    servers = ice_servers_json(manager.ice_servers) if manager is not None else []
    return JSONResponse({"ice_servers": servers, "data_channel": "oai-events",
                         "responders": available_responders(state), "responder": state.settings.responder})


async def start(state: Any, stack: contextlib.AsyncExitStack) -> None:
    """Bring the transport up in the app's lifespan; what it opens is closed at shutdown."""
    # Entered here, left at shutdown: aioice gathers on KOMBAIN_WEBRTC_HOSTS while the server runs.
    stack.enter_context(restrict_host_addresses(parse_hosts(state.settings.webrtc_hosts)))
    manager = CallManager(state.settings, state.metrics)
    stack.push_async_callback(manager.aclose)
    state.services.transports.put("webrtc", manager)
