"""mDNS advertisement of the listener as `_wyoming._tcp` (how Home Assistant discovers it)."""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any

log = logging.getLogger("kombain.wyoming")
SERVICE = "_wyoming._tcp.local."


def should_advertise(setting: str, listen_host: str) -> bool:
    """`on`/`off` decide; `auto` advertises unless the listener is on loopback (nobody else could
    reach it). Anything else is a configuration error."""
    value = setting.strip().lower()
    if value in ("on", "1", "true", "yes"):
        return True
    if value in ("off", "0", "false", "no"):
        return False
    if value != "auto":
        raise ValueError(f"KOMBAIN_WYOMING_ZEROCONF must be auto, on or off, not {setting!r}")
    return not _is_loopback(listen_host)


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0]).is_loopback
    except ValueError:
        return False  # a host name: it may be anything


def advertised_address(listen_host: str) -> str:
    """The IPv4 address to announce: the listener's own, or for a wildcard listener the address
    this host would send multicast from."""
    try:
        addr = ipaddress.ip_address(listen_host)
    except ValueError:
        addr = None
    if addr is not None and addr.version == 4 and not addr.is_unspecified:
        return str(addr)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("224.0.0.251", 5353))  # no packet is sent: this only picks a route
        return str(probe.getsockname()[0])


class Advertisement:
    """One registered service; `close()` withdraws it."""

    def __init__(self, zc: Any, info: Any) -> None:
        self._zc, self._info = zc, info

    async def close(self) -> None:
        try:
            await self._zc.async_unregister_service(self._info)
        finally:
            await self._zc.async_close()


async def advertise(name: str, address: str, port: int) -> Advertisement:
    """Register `name._wyoming._tcp.local.` at address:port, on that address's interface only."""
    from zeroconf import IPVersion
    from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

    zc = AsyncZeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
    info = AsyncServiceInfo(SERVICE, f"{name}.{SERVICE}", addresses=[socket.inet_aton(address)], port=port,
                            properties={"server": "kombain"}, server=f"{name}.local.")
    try:
        await zc.async_register_service(info)
    except BaseException:
        await zc.async_close()
        raise
    log.info("advertising %s at %s:%d by mDNS", info.name, address, port)
    return Advertisement(zc, info)
