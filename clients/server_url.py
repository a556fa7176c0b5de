"""The server a command-line client talks to when it is given no URL: the same settings the server reads."""

from __future__ import annotations

import os
from collections.abc import Mapping

DEFAULT_URL = "http://127.0.0.1:8000"


def default_server_url(env: Mapping[str, str] | None = None) -> str:
    """`KOMBAIN_URL` if set; else `http://KOMBAIN_HOST:KOMBAIN_PORT` (https with `KOMBAIN_SSL_CERTFILE`),
    each part defaulting to the server's own default, a wildcard listen address read as loopback."""
    env = os.environ if env is None else env
    if url := env.get("KOMBAIN_URL", "").strip():
        return url.rstrip("/")
    host = env.get("KOMBAIN_HOST", "").strip() or "127.0.0.1"
    port = env.get("KOMBAIN_PORT", "").strip() or "8000"
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    scheme = "https" if env.get("KOMBAIN_SSL_CERTFILE", "").strip() else "http"
    return f"{scheme}://{host}:{port}"
