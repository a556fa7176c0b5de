"""A kombain server inside the SIP test namespace, with its SIP listener and RTP ports on loopback."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import LiveServer, start_server, stop_server
from tests.sip.peers import free_udp_port

RTP_SPAN = 40
_first = free_udp_port(RTP_SPAN)
RTP_RANGE = range(_first, _first + RTP_SPAN)  # the server's RTP ports (free in the test's namespace)


@pytest.fixture(scope="session")
def sip_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("sip-server"), {
        "KOMBAIN_RTP_PORTS": f"{RTP_RANGE.start}-{RTP_RANGE.stop - 1}",
        "KOMBAIN_LANE_WORKERS": "0",
        "KOMBAIN_SIP_ANSWER_DELAY_MS": "1500",  # time for a CANCEL before the answer
    })
    yield server
    deadline = time.monotonic() + 45  # calls never ACKed end after timer H (32 s)
    while metric(server, "kombain_sessions_active", '{transport="sip"}') and time.monotonic() < deadline:
        time.sleep(0.5)
    left = metric(server, "kombain_sessions_active", '{transport="sip"}')
    stop_server(server)
    assert left == 0, f"{left} SIP calls still open after the tests"
    assert "Traceback" not in server.log(), server.log()[-5000:]


def metric(server: LiveServer, name: str, labels: str = "") -> float:
    text = httpx.get(server.url + "/metrics", timeout=5).text
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0
