"""One frozen settings object, read from the environment (KOMBAIN_*) and the CLI once at start-up."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "kombain"


@dataclass(frozen=True, slots=True)
class Settings:
    """Every tunable of the server. Field `foo_bar` is read from env `KOMBAIN_FOO_BAR`."""

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = field(default_factory=_default_data_dir)
    log_level: str = "info"
    # Comma-separated bearer tokens; empty means no auth (local use). /healthz, /readyz and
    # /metrics stay open so probes and scrapers need no secret.
    api_keys: str = ""
    # JWT bearer tokens (docs/security.md): HS256 with a shared secret and/or RS256/ES256 with a
    # public key (a PEM file path or the PEM itself); iss/aud are checked when set
    jwt_secret: str = ""
    jwt_public_key: str = ""
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_leeway_s: float = 10.0  # clock skew tolerated on exp/nbf/iat
    # Signs POST /v1/realtime/client_secrets tokens; share it across nodes ("" -> random per process)
    client_secret_key: str = ""
    metrics_auth: bool = False  # /metrics needs an admin credential (when auth is configured)
    # Per key (or JWT subject; per client IP without auth) limits; "" / 0 turns each off
    rate_limit: str = ""  # HTTP requests and handshakes, e.g. "120/minute" (PyPI `limits` syntax)
    rate_limit_storage: str = ""  # "" -> this node's memory; redis://host:port/db -> one rate across nodes
    key_max_calls: int = 0  # concurrent calls (realtime WS, WebRTC, telephony WebSockets)
    key_max_queued_jobs: int = 0  # unfinished lane jobs submitted through this node
    # TLS for the HTTP/WebSocket listener (both set -> https/wss)
    ssl_certfile: str = ""
    ssl_keyfile: str = ""

    # Speech-to-text
    stt_model: str = "tiny.en"  # "tiny.en" | "base" | "moonshine-base" (bundled) | a CTranslate2 or Moonshine model dir
    stt_device: str = "auto"  # auto | cpu | cuda
    stt_compute_type: str = "auto"  # auto -> int8 on CPU, float16 on CUDA
    stt_threads: int = 0  # per decode worker; 0 -> cores / workers
    stt_workers: int = 0  # Whisper decodes that run at once; 0 -> one per core (at most 4) on a CPU, 1 on CUDA
    stt_batch: int = 0  # live decodes waiting together decoded as one batch, at most; 0 -> 4 on a CPU, 16 on CUDA
    # Live decodes use an encoder window of the audio + pad seconds, at least min_window
    # (Whisper pads to 30 s otherwise); chosen by measurement, see docs/performance.md.
    stt_window_pad: float = 2.0
    stt_min_window: float = 10.0
    stt_beam_size: int = 1  # live finals; partials are always greedy
    stt_queue_size: int = 32  # bounded queue in front of the shared Whisper runtime
    stt_partial_interval_ms: int = 400  # new speech needed before another partial decode
    stt_idle_partial_interval_ms: int = 200  # ... while the decoder has nothing queued or running (0: off)
    stt_language: str = ""  # default language for multilingual models ("" -> auto)

    # Text-to-speech (Piper)
    tts_voice: str = "en_US-joe-medium"  # default voice: bundled id, an id in tts_voices_dir, or a .onnx path
    tts_voices_dir: str = ""  # directory of extra Piper voices (*.onnx beside *.onnx.json); "" -> none
    tts_threads: int = 0  # synthesis worker threads, one single-threaded ONNX run each; 0 -> cores
    tts_max_chars: int = 4096  # longest input accepted by POST /v1/audio/speech
    # Synthesised clauses and prompts kept for reuse (streaming/tts_cache.py): bytes of PCM per node,
    # texts up to this many characters, and a Redis shared by nodes ("" -> this node only)
    tts_cache_mb: float = 32.0
    tts_cache_max_chars: int = 200
    tts_cache_redis: str = ""
    tts_cache_ttl_s: float = 86400.0  # entries in the shared store expire after this

    # Voice activity detection and end of turn
    vad_threshold: float = 0.5
    vad_silence_ms: int = 500  # silence that ends a turn
    vad_prefix_padding_ms: int = 300
    vad_min_speech_ms: int = 100
    # End of turn: server_vad (silence) or semantic_vad (Smart Turn decides after a short pause)
    turn_detection: str = "server_vad"  # default for conversation sessions: server_vad | semantic_vad
    turn_eagerness: str = "auto"  # semantic_vad default: low | medium | high | auto
    turn_model: str = "smart-turn-v3.2"  # bundled (pipecat-ai wheel), an ONNX path, or "" for none
    turn_model_workers: int = 1  # threads running the end-of-turn model, shared by all calls
    # Interruptions: speech shorter than this only pauses a reply (coughs, "uh-huh"), then it resumes
    interrupt_min_speech_ms: int = 0
    interrupt_min_words: int = 0  # words (backchannels do not count) needed before a cancel

    # Conversation: who answers each turn, and how reply audio is paced
    responder: str = "echo"  # echo | script | openai
    responder_script: str = ""  # YAML IVR menu for responder=script (see examples/ivr_menu.yaml)
    responder_url: str = ""  # OpenAI-compatible base URL for responder=openai, e.g. http://127.0.0.1:8080/v1
    responder_model: str = "default"
    responder_api_key: str = ""
    responder_timeout_s: float = 10.0
    responder_system_prompt: str = "You are a helpful voice assistant. Answer briefly, in plain spoken sentences."
    mcp_allowed_urls: str = ""  # MCP tools: comma-separated URL prefixes sessions may name ("" = MCP tools refused)
    speculative_replies: bool = True  # prepare the reply at a pause, release it when the turn ends
    response_lead_ms: int = 500  # reply audio sent at most this far ahead of the caller's playback
    response_frame_ms: int = 100  # size of each response.output_audio.delta

    # Limits
    max_message_bytes: int = 4 * 1024 * 1024  # one WebSocket message (JSON or binary)
    max_session_seconds: int = 3600
    # A caller may send audio ahead of real time: max_audio_burst_s at once, then at most this many
    # times real time (its socket is read more slowly; nothing is dropped). 0: no limit.
    max_audio_speed: float = 20.0
    max_audio_burst_s: float = 60.0
    idle_timeout_s: float = 120.0  # a realtime WebSocket that sends no event or audio this long is closed (0: never)
    max_upload_bytes: int = 25 * 1024 * 1024
    max_sessions: int = 32
    max_turn_seconds: int = 30  # a single turn longer than this is committed
    send_queue_frames: int = 256  # events buffered per client before it counts as too slow
    # WebSocket keepalive: a ping this often; a peer whose pong has not come this long after is closed
    # (1011 "keepalive ping timeout"; not while the server itself is holding back reading that socket)
    ws_ping_interval_s: float = 20.0
    ws_ping_timeout_s: float = 20.0
    # WebRTC calls (POST /v1/realtime/calls); see docs/webrtc.md
    webrtc_ice_servers: str = ""  # STUN/TURN: JSON list of RTCIceServer objects, or comma-separated URLs
    webrtc_hosts: str = ""  # comma-separated local addresses ICE may gather ("" -> aioice's own choice)
    webrtc_connect_timeout_s: float = 15.0  # ICE + DTLS must complete within this, or the call is closed
    webrtc_peer_timeout_s: float = 5.0  # a connected peer silent this long (no media) has gone; end the call
    webrtc_max_offer_bytes: int = 64 * 1024  # largest SDP offer accepted
    # Browser pages of other origins allowed to open WebSockets and post WebRTC offers (server/origin.py):
    # comma-separated origins (https://app.example.com) or "*"; same origin and no-Origin clients always
    allowed_origins: str = ""
    webrtc_send_buffer_ms: int = 2000  # reply audio the outgoing track may hold (oldest dropped past it)
    # Shutdown: live calls get this long to finish after SIGTERM/SIGINT, then are told and closed
    drain_seconds: float = 30.0
    shutdown_goodbye: str = "Sorry, this service is restarting. Please call again later. Goodbye."
    # Telephony (Twilio Media Streams, Asterisk chan_websocket); see docs/telephony.md
    public_url: str = ""  # e.g. https://voice.example.com: TwiML stream URLs and Twilio signatures use it
    twilio_auth_token: str = ""  # set it to require a valid X-Twilio-Signature (TwiML webhook and stream)
    telephony_start_timeout_s: float = 10.0  # the stream's start message must arrive within this
    telephony_peer_timeout_s: float = 10.0  # a phone peer that sends no audio this long has gone
    telephony_max_protocol_errors: int = 50  # bad messages tolerated on one call before it is closed
    # Asterisk AudioSocket (TCP): "host:port", "" turns it off
    audiosocket_listen: str = "127.0.0.1:9092"
    audiosocket_config_ttl_s: float = 300.0  # a PUT /v1/telephony/audiosocket/{uuid} is kept this long
    audiosocket_max_configs: int = 1000  # pending per-call configurations (past it, 429)
    audiosocket_allow: str = ""  # comma-separated IPs/CIDRs allowed to connect ("" -> any)
    # SIP over UDP with G.711 RTP: "host:port", "" turns it off; see docs/telephony.md
    sip_listen: str = "127.0.0.1:5060"
    rtp_ports: str = "40000-40999"  # UDP ports for call media (one per call)
    sip_users: str = ""  # "user:password,..." turns on digest authentication for INVITE/OPTIONS
    sip_realm: str = "kombain"
    sip_advertise: str = ""  # address in SDP and Contact; needed when KOMBAIN_SIP_LISTEN is 0.0.0.0
    sip_answer_delay_ms: int = 0  # ring this long (180 Ringing, the PBX plays ringback) before the 200
    sip_allow: str = ""  # comma-separated IPs/CIDRs whose SIP requests are served ("" -> any; others get 403)
    # Wyoming (Home Assistant's speech services) over TCP: "host:port", "" turns it off; see docs/wyoming.md
    wyoming_listen: str = "127.0.0.1:10300"
    wyoming_allow: str = ""  # comma-separated IPs/CIDRs allowed to connect ("" -> any; others get an error and a close)
    wyoming_zeroconf: str = "auto"  # advertise _wyoming._tcp by mDNS: auto (unless on loopback), on, off
    wyoming_idle_timeout_s: float = 30.0  # a connection that sends no event this long is closed (0: never)
    # Comma-separated start-up components to skip (e.g. "speech-to-text" on a lane-only node)
    components_disabled: str = ""

    # GPU lane: image and video jobs, run by worker processes
    queue: str = "embedded"  # "embedded" (SQLite in data_dir) or redis://host:port/db
    image_model: str = ""  # local diffusers text-to-image pipeline dir
    video_model: str = ""  # local diffusers text-to-video pipeline dir
    lane_workers: int = 1  # worker subprocesses this server starts (0: only external workers)
    lane_threads: int = 1  # torch threads per worker; 1 leaves the cores to voice on a shared host
    lane_nice: int = 10  # niceness of worker processes (0: unchanged)
    lane_queue_limit: int = 64  # queued jobs past which submissions get 429
    lane_max_size: int = 1024  # largest width or height in pixels
    lane_max_images: int = 4  # largest n per image request
    lane_default_steps: int = 25
    lane_max_steps: int = 150
    lane_max_frames: int = 32
    lane_video_fps: int = 8
    lane_max_prompt_chars: int = 4000
    lane_image_timeout_s: float = 600  # POST /v1/images/generations waits this long for its job
    lane_retention_hours: float = 24  # finished jobs and their files are deleted after this
    lane_max_attempts: int = 3  # tries before a job goes to the dead letters
    lane_reclaim_idle_s: float = 60  # Redis: a job silent this long is taken over by another worker
    # Voice-priority gate: pause between denoising steps while voice needs the CPU
    lane_gate: bool = True  # off on dedicated lane hosts
    lane_gate_pending: int = 1  # pause while this many STT requests are queued or running (0: never)
    lane_gate_sessions: int = 0  # pause while this many live sessions (0: never)
    lane_gate_max_pause_s: float = 30  # longest single pause, so a stuck counter cannot starve jobs

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from `KOMBAIN_*` variables, then explicit overrides (CLI flags)."""
        env = dict(os.environ if env is None else env)
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get("KOMBAIN_" + f.name.upper())
            if raw is not None:
                values[f.name] = _convert(hints[f.name], raw, f.name)
        for k, v in overrides.items():
            if v is not None:
                values[k] = _convert(hints[k], v, k) if isinstance(v, str) else v
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def disabled_components(self) -> frozenset[str]:
        return frozenset(c.strip() for c in self.components_disabled.split(",") if c.strip())

    @property
    def api_key_set(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.api_keys.split(",") if k.strip())

    @property
    def auth_enabled(self) -> bool:
        """Any credential configured: API keys or a JWT key. Off means an open (local) server."""
        return bool(self.api_key_set or self.jwt_secret or self.jwt_public_key)


def _convert(tp: Any, raw: str, name: str) -> Any:
    try:
        if tp is bool:
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        if tp is int:
            return int(raw)
        if tp is float:
            return float(raw)
        if tp is Path:
            return Path(raw).expanduser()
        return raw
    except ValueError as exc:
        raise ValueError(f"setting {name}: cannot parse {raw!r} as {tp.__name__}") from exc
