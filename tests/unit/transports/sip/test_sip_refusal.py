"""server.transports.sip: the answer to a refused call, at the INVITE or when the call opens."""

from __future__ import annotations

import pytest

from kombain.server.host import CallRefused
from kombain.server.transports.sip.connection import _refusal


@pytest.mark.parametrize(
    ("code", "answer"),
    [
        ("server_full", (486, "Busy Here")),  # a dispatcher tries the next node
        ("server_draining", (503, "Service Unavailable")),
        ("server_not_ready", (503, "Service Unavailable")),
    ],
)
def test_a_full_node_is_busy_and_a_draining_one_unavailable(code: str, answer: tuple[int, str]) -> None:
    assert _refusal(CallRefused("no", code, 5)) == answer
