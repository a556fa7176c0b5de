"""ICE configuration: STUN/TURN servers from a setting, and which local addresses aioice gathers.

aioice gathers host candidates from every interface except loopback, which leaves a host (or a
network namespace) that has only 127.0.0.1 with no candidates at all. `restrict_host_addresses`
swaps aioice's address lookup for a fixed list while the WebRTC transport runs, and puts the
original back on exit. It is the one place that touches aioice's internals.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import aioice.ice
from aiortc import RTCIceServer


def parse_ice_servers(raw: str) -> list[RTCIceServer]:
    """`[{"urls": ..., "username": ..., "credential": ...}, ...]` or `stun:a:3478,turn:b:3478`."""
    raw = raw.strip()
    if not raw:
        return []
    if raw.startswith("["):
        try:
            items = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"webrtc_ice_servers: not valid JSON: {exc}") from None
        servers = []
        for item in items:
            if not isinstance(item, dict) or "urls" not in item:
                raise ValueError("webrtc_ice_servers: each entry needs 'urls'")
            servers.append(RTCIceServer(urls=item["urls"], username=item.get("username"),
                                        credential=item.get("credential")))
        return servers
    return [RTCIceServer(urls=u.strip()) for u in raw.split(",") if u.strip()]


def ice_servers_json(servers: list[RTCIceServer]) -> list[dict[str, object]]:
    """The same servers in the browser's RTCConfiguration shape."""
    out: list[dict[str, object]] = []
    for s in servers:
        entry: dict[str, object] = {"urls": s.urls}
        if s.username:
            entry["username"] = s.username
        if s.credential:
            entry["credential"] = s.credential
        out.append(entry)
    return out


def parse_hosts(raw: str) -> tuple[str, ...]:
    return tuple(h.strip() for h in raw.split(",") if h.strip())


@contextlib.contextmanager
def restrict_host_addresses(hosts: tuple[str, ...]) -> Iterator[None]:
    """Make aioice gather host candidates on exactly `hosts` (loopback allowed); no-op if empty."""
    if not hosts:
        yield
        return
    original = aioice.ice.get_host_addresses

    def lookup(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [h for h in hosts if (":" in h and use_ipv6) or (":" not in h and use_ipv4)]

    aioice.ice.get_host_addresses = lookup
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original
