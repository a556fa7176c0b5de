"""OpenAI's `output_audio_buffer.started` / `.stopped` / `.cleared` for a WebRTC call, sans I/O.

Over WebRTC the server owns the audio buffer, so it tells the client when a response's audio
starts playing on the track, when all of it has played, and when a barge-in (or a cancel) cut it.
Fed with the track's playback reports (what was really sent) and the response ends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kombain.server.transports.openai_realtime.protocol import server_event


class OutputBufferEvents:
    def __init__(self, send: Callable[[dict[str, Any]], None]) -> None:
        self._send = send
        self._playing: str | None = None  # the response whose audio is on the track
        self._position = 0  # ms of it played so far
        self._end: int | None = None  # its length, once the response is done
        self._over: str | None = None  # the last response stopped or cleared (late reports ignored)

    def played(self, response_id: str, position_ms: int, interrupted: bool) -> None:
        """The track's report: `position_ms` of `response_id` has been sent (or cut there)."""
        if not response_id or response_id == self._over:
            return
        if interrupted:
            if self._playing == response_id:
                self._stop("output_audio_buffer.cleared")
            return
        if self._playing != response_id:
            if self._playing is not None:  # a new reply took over without a clear
                self._stop("output_audio_buffer.stopped")
            self._playing, self._position, self._end = response_id, 0, None
            self._send(server_event("output_audio_buffer.started", response_id=response_id))
        self._position = max(self._position, position_ms)
        if self._end is not None and self._position >= self._end:
            self._stop("output_audio_buffer.stopped")

    def finished(self, response_id: str, status: str, audio_sent_ms: int) -> None:
        """The response is done: once the track has played `audio_sent_ms`, its buffer stopped."""
        if self._playing != response_id:
            return
        if status == "cancelled":
            self._stop("output_audio_buffer.cleared")
            return
        self._end = audio_sent_ms
        if self._position >= audio_sent_ms:
            self._stop("output_audio_buffer.stopped")

    def _stop(self, type_: str) -> None:
        response_id, self._playing = self._playing, None
        self._over = response_id
        self._send(server_event(type_, response_id=response_id))
