"""`kombain` command line: serve, settings, worker (GPU lane), transcribe (client)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

SERVE_EPILOG = """\
Every server setting is an environment variable KOMBAIN_<NAME> (KOMBAIN_PORT, KOMBAIN_STT_MODEL,
KOMBAIN_RESPONDER, KOMBAIN_API_KEYS, ...); a flag overrides its variable. `kombain settings`
lists them all with their defaults; README.md and server/settings.py say what each does.
"""


def main(argv: list[str] | None = None) -> int:
    from kombain.clients.server_url import DEFAULT_URL
    from kombain.server.settings import Settings

    d = Settings()  # the defaults, shown in --help
    parser = argparse.ArgumentParser(prog="kombain", description="Self-hosted real-time AI media server")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server", epilog=SERVE_EPILOG,
                           description="Run the server: HTTP, WebSocket and WebRTC on one port, "
                                       "plus the AudioSocket and SIP listeners.",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--host", default=None, help=f"address to listen on (KOMBAIN_HOST; default {d.host}; "
                                                    "0.0.0.0 for every interface)")
    serve.add_argument("--port", type=int, default=None, help=f"HTTP/WebSocket port (KOMBAIN_PORT; default {d.port})")
    serve.add_argument("--stt-model", default=None, help="speech-to-text model: tiny.en, base, moonshine-base, "
                                                         f"or a CTranslate2 or Moonshine model dir (KOMBAIN_STT_MODEL; default {d.stt_model})")
    serve.add_argument("--data-dir", default=None, help="assembled models, lane queue and results "
                                                        f"(KOMBAIN_DATA_DIR; default {d.data_dir})")
    serve.add_argument("--log-level", default=None, help="critical, error, warning, info or debug "
                                                         f"(KOMBAIN_LOG_LEVEL; default {d.log_level})")
    serve.add_argument("--ssl-certfile", default=None, help="TLS certificate chain (PEM); serves https/wss "
                                                            "(KOMBAIN_SSL_CERTFILE; default none)")
    serve.add_argument("--ssl-keyfile", default=None, help="TLS private key (PEM) (KOMBAIN_SSL_KEYFILE; default none)")

    sub.add_parser("settings", help="list every KOMBAIN_* setting with its default",
                   description="List every KOMBAIN_* environment setting with its default; "
                               "those set in this environment are marked (values not shown).")

    wk = sub.add_parser("worker", help="run a GPU-lane worker (image/video jobs)")
    wk.add_argument("--queue", default=None, help=f"'embedded' or redis://host:port/db (KOMBAIN_QUEUE; default {d.queue})")
    wk.add_argument("--data-dir", default=None, help=f"(KOMBAIN_DATA_DIR; default {d.data_dir})")
    wk.add_argument("--image-model", default=None, help="local diffusers text-to-image pipeline dir (KOMBAIN_IMAGE_MODEL)")
    wk.add_argument("--video-model", default=None, help="local diffusers text-to-video pipeline dir (KOMBAIN_VIDEO_MODEL)")
    wk.add_argument("--threads", type=int, default=None, help=f"torch threads (KOMBAIN_LANE_THREADS; default {d.lane_threads})")
    wk.add_argument("--worker-id", default=None, help="name in the queue's records (default: host and pid)")
    wk.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    wk.add_argument("--log-level", default=None, help=f"(KOMBAIN_LOG_LEVEL; default {d.log_level})")

    tr = sub.add_parser("transcribe", help="stream an audio file to a server and print transcripts")
    tr.add_argument("file")
    tr.add_argument("--url", default=None, help="the server (default: KOMBAIN_URL, else http://KOMBAIN_HOST:"
                                                f"KOMBAIN_PORT, else {DEFAULT_URL})")
    tr.add_argument("--realtime", action="store_true", help="stream at 1x over /v1/realtime (default)")
    tr.add_argument("--rest", action="store_true", help="upload to /v1/audio/transcriptions instead")
    tr.add_argument("--speed", type=float, default=1.0, help="playback speed for --realtime (default 1.0)")
    tr.add_argument("--api-key", default=None, help="bearer token, if the server has keys (default none)")

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "worker":
        return _worker(args)
    if args.command == "settings":
        return _settings()
    if args.command == "transcribe":
        from kombain.clients.server_url import default_server_url
        from kombain.clients.transcribe_cli import run

        args.url = args.url or default_server_url()
        return run(args)
    return 2


def _settings() -> int:
    import dataclasses

    from kombain.server.settings import Settings

    defaults = Settings()
    for f in dataclasses.fields(Settings):
        name = "KOMBAIN_" + f.name.upper()
        value = getattr(defaults, f.name)
        shown = "(none)" if value == "" else str(value).lower() if isinstance(value, bool) else str(value)
        print(f"{name:<36} {shown}{'   [set here]' if name in os.environ else ''}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from kombain.server.app import create_app
    from kombain.server.settings import Settings

    try:
        settings = Settings.from_env(
            host=args.host, port=args.port, stt_model=args.stt_model,
            data_dir=args.data_dir, log_level=args.log_level,
            ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
        )
    except ValueError as exc:
        print(f"kombain: {exc}", file=sys.stderr)
        return 2
    if bool(settings.ssl_certfile) != bool(settings.ssl_keyfile):
        print("kombain: TLS needs both --ssl-certfile and --ssl-keyfile", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from kombain.server.auth import redact_keys_in_logs
    from kombain.server.drain import DrainingServer
    from kombain.server.ws_protocol import websocket_protocol

    try:
        app = create_app(settings)  # checks the JWT key, limits and allow-lists
    except (ValueError, OSError) as exc:
        print(f"kombain: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level,
        # Above our own limit, so an oversized message gets a clear error event rather than a close.
        ws_max_size=settings.max_message_bytes * 2 + 65536, timeout_graceful_shutdown=10,
        ws=websocket_protocol(),  # a text frame that is not UTF-8 gets an error event, not a traceback
        # No permessage-deflate: audio hardly compresses, and with it 1 MB of compressed zeros on
        # the wire became 1 GB of frames to decompress and analyse (a flood that froze every call).
        ws_per_message_deflate=False,
        ws_ping_interval=settings.ws_ping_interval_s or None, ws_ping_timeout=settings.ws_ping_timeout_s or None,
        ssl_certfile=settings.ssl_certfile or None, ssl_keyfile=settings.ssl_keyfile or None,
    )
    redact_keys_in_logs()  # after uvicorn.Config, which configures its loggers
    DrainingServer(config, app.state.kombain).run()
    return 0


def _worker(args: argparse.Namespace) -> int:
    from kombain.server.settings import Settings

    try:
        settings = Settings.from_env(
            queue=args.queue, data_dir=args.data_dir, image_model=args.image_model,
            video_model=args.video_model, lane_threads=args.threads, log_level=args.log_level,
        )
    except ValueError as exc:
        print(f"kombain: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from kombain.server.lane.worker import run_worker

    return run_worker(settings, worker_id=args.worker_id, parent_pid=args.parent_pid)


if __name__ == "__main__":
    sys.exit(main())
