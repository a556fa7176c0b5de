"""The Wyoming listener (`KOMBAIN_WYOMING_LISTEN`, default 127.0.0.1:10300): accepts connections
from allowed peers, advertises itself by zeroconf where asked, and closes its connections at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import socket
from typing import Any

from kombain.server.host import CallHost
from kombain.server.metrics import Metrics
from kombain.server.peers import PeerAllowList
from kombain.server.services import Services
from kombain.server.settings import Settings
from kombain.server.transports.wyoming import info as info_mod
from kombain.server.transports.wyoming.connection import READ_BYTES, WyomingConnection, linger
from kombain.server.transports.wyoming.protocol import error
from kombain.server.transports.wyoming.zeroconf_ad import (
    Advertisement,
    advertise,
    advertised_address,
    should_advertise,
)

log = logging.getLogger("kombain.wyoming")


class WyomingServer:
    """The TCP listener and its connections."""

    def __init__(self, settings: Settings, metrics: Metrics, host: CallHost, services: Services) -> None:
        self.settings, self.metrics, self.host, self.services = settings, metrics, host, services
        self.allow = PeerAllowList(settings.wyoming_allow, "wyoming_allow")
        self._listen_host, _, port = settings.wyoming_listen.rpartition(":")
        self._listen_host = self._listen_host.strip("[]") or "127.0.0.1"
        self._port = int(port)
        self.zeroconf = should_advertise(settings.wyoming_zeroconf, self._listen_host)  # ValueError: bad setting
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ad: Advertisement | None = None
        self.address: tuple[str, int] | None = None
        try:
            self.version = importlib.metadata.version("kombain")
        except importlib.metadata.PackageNotFoundError:
            self.version = "0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self._listen_host, self._port, limit=READ_BYTES)
        sock = self._server.sockets[0].getsockname()
        self.address = (sock[0], sock[1])
        log.info("Wyoming listening on %s:%d", *self.address)
        if self.zeroconf:
            try:
                name = "kombain-" + "".join(c if c.isalnum() else "-" for c in socket.gethostname())[:40]
                address = advertised_address(self._listen_host)
                self._ad = await advertise(name, address, self.address[1])
            except Exception as exc:  # discovery is a convenience: the listener serves without it
                log.warning("zeroconf advertisement failed (%s); Home Assistant will not discover this node", exc)

    async def aclose(self) -> None:
        if self._ad is not None:
            with contextlib.suppress(Exception):
                await self._ad.close()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):  # each connection reads its end and finishes
            writer.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        for task in list(self._tasks):
            task.cancel()

    def info(self) -> dict[str, Any]:
        return info_mod.describe(self.settings, self.services, self.version)

    def count(self, code: str) -> None:
        self.metrics.telephony_events_total.labels("wyoming", code).inc()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        try:
            peer = writer.get_extra_info("peername")
            if not self.allow.allows(str(peer[0]) if peer else ""):
                log.warning("Wyoming peer %s refused (KOMBAIN_WYOMING_ALLOW)", peer)
                self.count("forbidden")
                writer.write(error("this address may not use the Wyoming listener", "forbidden"))
                await linger(reader, writer)
                return
            await WyomingConnection(self, reader, writer).serve()
        except Exception:  # one connection's failure never reaches the listener
            log.exception("Wyoming connection failed")
        finally:
            if task is not None:
                self._tasks.discard(task)
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()


async def start(state: Any, stack: contextlib.AsyncExitStack) -> None:
    """Bring the listener up in the app's lifespan (after the models); closed at shutdown."""
    if not state.settings.wyoming_listen:
        return
    server = WyomingServer(state.settings, state.metrics, state.host, state.services)
    await server.start()
    stack.push_async_callback(server.aclose)
    state.services.transports.put("wyoming", server)
