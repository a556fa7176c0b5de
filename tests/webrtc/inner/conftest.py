"""A kombain server inside the namespace: ICE on 127.0.0.1, short timeouts so cleanup is quick."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import LiveServer, start_server, stop_server

SERVER_ENV = {
    "KOMBAIN_WEBRTC_HOSTS": "127.0.0.1",
    "KOMBAIN_WEBRTC_CONNECT_TIMEOUT_S": "3",
    "KOMBAIN_WEBRTC_PEER_TIMEOUT_S": "2",
    "KOMBAIN_LANE_WORKERS": "0",
}
HOSTS = ("127.0.0.1",)


@pytest.fixture(scope="session")
def rtc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("rtc-server"), SERVER_ENV)
    yield server
    stop_server(server)
    assert "Traceback" not in server.log(), server.log()[-5000:]


def metric(server: LiveServer, name: str, labels: str = "") -> float:
    text = httpx.get(server.url + "/metrics", timeout=5).text
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def webrtc_active(server: LiveServer) -> float:
    return metric(server, "kombain_sessions_active", '{transport="webrtc"}')
