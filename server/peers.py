"""Peer allow-lists for the telephony listeners (AudioSocket, SIP): IPs and CIDRs, sans I/O."""

from __future__ import annotations

import ipaddress

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class PeerAllowList:
    """`allows(ip)` for a comma-separated list of addresses and networks; empty allows every peer."""

    def __init__(self, spec: str, setting: str = "allow-list") -> None:
        nets: list[_Network] = []
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"{setting}: {item!r} is not an IP address or CIDR network") from None
        self.networks = tuple(nets)

    @property
    def open(self) -> bool:
        return not self.networks

    def allows(self, ip: str) -> bool:
        if not self.networks:
            return True
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])  # drop an IPv6 zone id
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
        return any(addr.version == net.version and addr in net for net in self.networks)
