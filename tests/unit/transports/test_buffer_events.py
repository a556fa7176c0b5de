"""WebRTC's output_audio_buffer events from playback reports and response ends (pure)."""

from __future__ import annotations

from typing import Any

from kombain.server.transports.webrtc.buffer_events import OutputBufferEvents


def tracker() -> tuple[OutputBufferEvents, list[tuple[str, str]]]:
    sent: list[tuple[str, str]] = []

    def send(event: dict[str, Any]) -> None:
        sent.append((event["type"].rpartition(".")[2], event["response_id"]))

    return OutputBufferEvents(send), sent


def test_started_at_the_first_audio_and_stopped_once_all_of_it_played() -> None:
    t, sent = tracker()
    t.played("r1", 100, False)
    t.played("r1", 200, False)
    t.finished("r1", "completed", 400)  # done sending; 200 ms still to play
    assert sent == [("started", "r1")]
    t.played("r1", 400, False)
    assert sent == [("started", "r1"), ("stopped", "r1")]
    t.played("r1", 400, False)  # a late report changes nothing
    assert len(sent) == 2


def test_a_finish_after_the_last_report_stops_at_once() -> None:
    t, sent = tracker()
    t.played("r1", 300, False)
    t.finished("r1", "completed", 300)
    assert sent == [("started", "r1"), ("stopped", "r1")]


def test_barge_in_clears_and_the_next_reply_starts_again() -> None:
    t, sent = tracker()
    t.played("r1", 100, False)
    t.played("r1", 150, True)  # the track dropped the rest
    t.finished("r1", "cancelled", 900)
    t.played("r2", 100, False)
    t.finished("r2", "cancelled", 100)
    assert sent == [("started", "r1"), ("cleared", "r1"), ("started", "r2"), ("cleared", "r2")]


def test_reports_without_a_response_and_unknown_ends_are_ignored() -> None:
    t, sent = tracker()
    t.played("", 100, False)
    t.finished("r9", "completed", 100)
    assert sent == []
