"""loadtest.turn_lines / turn_data: latency as heard and cut-ins from timed events, frame timing of a
stimulus, the server defaults a phone mode runs under (pure functions of the turn-taking benchmark)."""

from __future__ import annotations

import numpy as np

from kombain.loadtest.turn_data import FRAME, RATE, Stimulus, speech_kind
from kombain.loadtest.turn_lines import _frame_of, bursts, heard_outcome, server_env


def test_phone_latency_is_the_first_reply_audio_after_the_end_of_speech():
    out = heard_outcome(10.0, 8.0, [4.0, 4.02, 10.62, 10.64, 10.66])
    assert out["latency_s"] == 0.62
    assert not out["cut_in"] and out["early_replies"] == 0


def test_phone_reply_heard_while_speaking_is_a_cut_in_and_its_tail_is_not_the_answer():
    # A reply to the first half starts in the pause (8.9 s), is still arriving at the end of speech
    # (10.0 s) without a gap, then the answer to the whole turn follows a gap.
    voiced = [8.9, 9.0, 9.1, 9.2, 9.3, 9.4, 9.5, 9.6, 9.7, 9.8, 9.9, 10.0, 10.05, 10.7, 10.72]
    out = heard_outcome(10.0, 8.0, voiced, pause=(8.5, 9.3))
    assert out["cut_in"] and out["reply_in_pause"]
    assert out["latency_s"] == 0.7


def test_phone_no_reply_is_no_latency():
    out = heard_outcome(10.0, 8.0, [3.0, 3.02])
    assert out["latency_s"] is None and not out["cut_in"]


def test_events_a_reply_created_before_the_end_of_speech_is_a_cut_in():
    # WebRTC: the reply created at 9.0 s (in the pause) was cut; the answer created at 10.5 s.
    out = heard_outcome(10.0, 8.0, [9.2, 9.22, 10.55, 10.57], created=[9.0, 10.5], commits=[8.95, 10.45],
                        pause=(8.5, 9.5))
    assert out["cut_in"] and out["reply_in_pause"] and out["early_replies"] == 1
    assert out["turns"] == 2
    assert out["latency_s"] == 0.55


def test_events_two_turns_without_an_early_reply_is_a_cut_in():
    out = heard_outcome(10.0, 8.0, [10.6], created=[10.5], commits=[9.4, 10.45])
    assert out["cut_in"] and out["turns"] == 2 and out["early_replies"] == 0
    assert out["latency_s"] == 0.6


def test_events_one_turn_answered_is_not_a_cut_in():
    out = heard_outcome(10.0, 8.0, [7.5, 10.6], created=[7.0, 10.5], commits=[6.9, 10.45, 12.0])
    assert not out["cut_in"] and out["turns"] == 1 and out["latency_s"] == 0.6


def test_frame_of_maps_seconds_to_the_frame_that_holds_them():
    assert _frame_of(0.0, 0.02, 100) == 0
    assert _frame_of(0.05, 0.02, 100) == 2
    assert _frame_of(0.06, 0.02, 100, end=True) == 2  # the sample just before 60 ms
    assert _frame_of(9.0, 0.02, 100) == 99


def test_edges_of_a_paused_stimulus():
    loud = np.full(RATE // 5, 0.1, np.float32)  # 200 ms voiced
    gap = np.zeros(RATE * 400 // 1000, np.float32)
    sig = np.concatenate([np.zeros(RATE // 10, np.float32), loud, gap, loud, np.zeros(RATE // 10, np.float32)])
    stim = Stimulus("x", "paused", sig, np.ones(1, bool), pause_ms=400, threshold=0.01,
                    pause_at=RATE // 10 + len(loud))
    e = stim.edges_s()
    assert abs(e["start"] - 0.1) < FRAME / RATE
    assert abs(e["part1_end"] - 0.3) < FRAME / RATE
    assert abs(e["part2_start"] - 0.7) < FRAME / RATE
    assert abs(e["end"] - 0.9) < FRAME / RATE


def test_server_env_per_mode():
    assert server_env({"type": "server_vad", "silence_duration_ms": 200}) == {
        "KOMBAIN_TURN_DETECTION": "server_vad", "KOMBAIN_VAD_SILENCE_MS": "200"}
    assert server_env({"type": "semantic_vad", "eagerness": "high"}) == {
        "KOMBAIN_TURN_DETECTION": "semantic_vad", "KOMBAIN_TURN_EAGERNESS": "high"}


def test_bursts_split_reply_audio_at_gaps():
    voiced = [1.0, 9.0, 9.1, 9.2, 10.6, 10.7, 20.0]
    assert bursts(voiced, 8.0, 12.0, 10.0) == [[-1.0, -0.8], [0.6, 0.7]]


def test_speech_kind_of_a_clip():
    assert speech_kind("cards_005") == "command"
    assert speech_kind("arctic_a0007") == "sentence"
