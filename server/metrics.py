"""All Prometheus metrics, declared in one place, on a registry owned by the app (no globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from kombain.streaming.speculation import OUTCOMES

# Sub-second stages: dense buckets under 200 ms, where the latency goals sit.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)


class Metrics:
    """The process's metrics; pass it to whatever records something."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.sessions_active = Gauge(
            "kombain_sessions_active", "Live realtime sessions", ["transport"], registry=r
        )
        self.sessions_total = Counter(
            "kombain_sessions_total", "Realtime sessions opened", ["transport"], registry=r
        )
        self.sessions_rejected = Counter(
            "kombain_sessions_rejected_total", "Calls refused: full, draining or not ready",
            ["transport", "reason"], registry=r
        )
        self.dtmf_total = Counter(
            "kombain_dtmf_total", "Key presses (DTMF digits) received", ["transport"], registry=r
        )
        self.turn_model_seconds = Histogram(
            "kombain_turn_model_seconds", "End-of-turn model (Smart Turn) inference time",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.turn_check_probability = Histogram(
            "kombain_turn_check_probability", "End-of-turn verdicts (probability the turn is complete)",
            buckets=(0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0), registry=r,
        )
        self.semantic_vad_fallbacks = Counter(
            "kombain_semantic_vad_fallbacks_total",
            "Sessions that asked for semantic_vad and got server_vad (end-of-turn model not loaded)", registry=r,
        )
        self.turn_model_load_failures = Counter(
            "kombain_turn_model_load_failures_total", "The end-of-turn model failed to load at start-up", registry=r,
        )
        self.rtp_packets_total = Counter(
            "kombain_rtp_packets_total", "RTP packets of SIP calls: received, sent, lost, late", ["kind"], registry=r,
        )
        self.telephony_events_total = Counter(
            "kombain_telephony_events_total", "Telephony protocol messages that were refused, by code",
            ["transport", "code"], registry=r
        )
        self.webrtc_setup_seconds = Histogram(
            "kombain_webrtc_setup_seconds",
            "WebRTC offer received to the peer connection connected (ICE + DTLS)",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 3.0, 5.0, 10.0, 15.0),
            registry=r,
        )
        self.webrtc_calls_ended = Counter(
            "kombain_webrtc_calls_ended_total", "WebRTC calls ended, by reason", ["reason"], registry=r
        )
        self.stt_queue_depth = Gauge(
            "kombain_stt_queue_depth", "Requests waiting for the Whisper runtime", registry=r
        )
        self.stt_inference_seconds = Histogram(
            "kombain_stt_inference_seconds",
            "Whisper call duration",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stt_batch_size = Histogram(
            "kombain_stt_batch_size", "Live decodes run together in one Whisper batch", ["kind"],
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32), registry=r,
        )
        self.stt_final_seconds = Histogram(
            "kombain_stt_final_seconds",
            "End-of-turn decision to final transcript sent",
            ["transport"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.partial_lag_seconds = Histogram(
            "kombain_partial_lag_seconds",
            "Arrival of the last audio a partial covers to that partial sent",
            ["transport"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stt_dropped = Counter(
            "kombain_stt_dropped_total", "Partial decodes skipped: queue full, or replaced by a newer partial", registry=r
        )
        self.rate_limit_store_errors = Counter(
            "kombain_rate_limit_store_errors_total",
            "Shared limits store (Redis) unreachable: a request let through unlimited, or a call counted per node", registry=r,
        )
        self.stt_partials_late = Counter(
            "kombain_stt_partials_late_total",
            "Partial decodes still queued or running when their turn ended (cancelled: the final supersedes them)", registry=r,
        )
        self.audio_in_seconds = Counter(
            "kombain_audio_in_seconds_total",
            "Seconds of caller audio taken by calls (beyond real time means clients streaming ahead)",
            ["transport"], registry=r,
        )
        self.vad_seconds = Histogram(
            "kombain_vad_seconds",
            "Silero VAD time per audio chunk",
            buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05),
            registry=r,
        )
        self.client_errors = Counter(
            "kombain_client_errors_total", "Error events sent for bad client input", ["code"], registry=r
        )
        self.turn_seconds = Histogram(
            "kombain_turn_seconds",
            "Last voiced sample received to first reply audio sent (silence wait included)",
            ["transport"],
            buckets=tuple(sorted({*_LATENCY_BUCKETS, 1.5, 3.0})),
            registry=r,
        )
        self.barge_in_seconds = Histogram(
            "kombain_barge_in_seconds",
            "First voiced sample of an interruption to reply audio stopped",
            ["transport"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.responses_total = Counter(
            "kombain_responses_total", "Spoken responses by outcome", ["transport", "status"], registry=r
        )
        self.speculative_replies_total = Counter(
            "kombain_speculative_replies_total",
            "Replies prepared at a pause before the turn ended: used, or dropped unseen (why; the work wasted)",
            ["transport", "outcome"], registry=r
        )
        self.transcriptions_total = Counter(
            "kombain_transcriptions_total", "REST transcription requests", ["status"], registry=r
        )

        self.tts_first_audio_seconds = Histogram(
            "kombain_tts_first_audio_seconds",
            "Text available to speak to its first audio synthesised",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tts_queue_depth = Gauge(
            "kombain_tts_queue_depth", "Text chunks waiting for a synthesis worker", registry=r
        )
        self.tts_streams_active = Gauge(
            "kombain_tts_streams_active", "Speech responses being synthesised and sent", registry=r
        )
        self.tts_cache_hits_total = Counter(
            "kombain_tts_cache_hits_total", "Speech chunks served from the synthesis cache, by tier (memory, shared)",
            ["tier"], registry=r,
        )
        self.tts_cache_misses_total = Counter(
            "kombain_tts_cache_misses_total", "Cacheable speech chunks not in the cache (rendered, then kept)",
            registry=r,
        )
        self.tts_cache_bytes = Gauge(
            "kombain_tts_cache_bytes", "PCM bytes held by this node's synthesis cache", registry=r
        )
        self.tts_cache_store_errors_total = Counter(
            "kombain_tts_cache_store_errors_total",
            "Shared synthesis cache (Redis) unreachable: the chunk was rendered here instead", registry=r,
        )
        self.speech_requests_total = Counter(
            "kombain_speech_requests_total", "REST speech requests", ["status"], registry=r
        )

        # GPU lane (image/video jobs); step and pause timings arrive from the workers.
        self.lane_queue_depth = Gauge("kombain_lane_queue_depth", "Lane jobs waiting", registry=r)
        self.lane_jobs_running = Gauge("kombain_lane_jobs_running", "Lane jobs running", registry=r)
        self.lane_jobs_total = Counter(
            "kombain_lane_jobs_total", "Lane jobs ended by a worker", ["kind", "status"], registry=r
        )
        self.lane_submissions_rejected = Counter(
            "kombain_lane_submissions_rejected_total", "Lane submissions refused (queue full)", registry=r
        )
        self.lane_step_seconds = Histogram(
            "kombain_lane_step_seconds",
            "Duration of one denoising step (pauses excluded)",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.lane_pause_seconds = Histogram(
            "kombain_lane_pause_seconds",
            "Time a lane job spent paused for voice, per job",
            ["kind"],
            buckets=(0.0, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0),
            registry=r,
        )

        # Known label values exist from the start, so dashboards and rate() see zeros, not gaps.
        for tier in ("memory", "shared"):
            self.tts_cache_hits_total.labels(tier)
        for kind in ("final", "partial", "offline"):
            self.stt_inference_seconds.labels(kind)
            self.stt_batch_size.labels(kind)

    def add_transport(self, transport: str) -> None:
        """Create a transport's label values up front, so dashboards see zeros, not gaps."""
        self.sessions_active.labels(transport)
        self.sessions_total.labels(transport)
        for hist in (self.stt_final_seconds, self.partial_lag_seconds, self.turn_seconds,
                     self.barge_in_seconds):
            hist.labels(transport)
        for outcome in OUTCOMES:
            self.speculative_replies_total.labels(transport, outcome)

    def observe_lane_job(self, kind: str, status: str, steps: list[float], paused: float) -> None:
        """Record one job's report from a worker."""
        self.lane_jobs_total.labels(kind, status).inc()
        hist = self.lane_step_seconds.labels(kind)
        for sec in steps:
            hist.observe(sec)
        self.lane_pause_seconds.labels(kind).observe(paused)

    def render(self) -> bytes:
        return generate_latest(self.registry)
