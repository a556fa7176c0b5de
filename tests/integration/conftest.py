"""Fixtures shared by the integration tests that need more than the default live server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI

from tests.conftest import LiveServer, start_server, stop_server
from tests.integration.chat_standin import chat_server
from tests.integration.mcp_standin import mcp_server
from tests.lane.conftest import redis_server  # noqa: F401  (the lane's fixture: a real redis-server of the test's own)


@dataclass
class AgentServer:
    """A kombain server whose `openai` responder talks to the scripted chat stand-in (`chat`), and
    may call the MCP server at `mcp_url` (tests/integration/mcp_standin.py)."""

    server: LiveServer
    chat: FastAPI
    mcp_url: str

    @property
    def ws_url(self) -> str:
        return self.server.ws_url

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="session")
def agent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    """One server with KOMBAIN_RESPONDER=openai for the SDK and agent framework tests."""
    with chat_server() as (url, app), mcp_server() as mcp_url:
        server = start_server(tmp_path_factory.mktemp("agent-server"), {
            "KOMBAIN_RESPONDER": "openai", "KOMBAIN_RESPONDER_URL": url, "KOMBAIN_RESPONDER_TIMEOUT_S": "3",
            "KOMBAIN_MCP_ALLOWED_URLS": "http://127.0.0.1:"})
        try:
            yield AgentServer(server, app, mcp_url)
        finally:
            stop_server(server)
    assert "Traceback" not in server.log(), server.log()[-5000:]

