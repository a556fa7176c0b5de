"""The call page as the server serves it: the page and its controls, the favicon, what the page
learns from /v1/realtime/calls/config, and a responder a node cannot run refused with a reason.
The page itself runs in headless Chromium in tests/webrtc/inner/test_chromium.py."""

from __future__ import annotations

import httpx


def test_page_favicon_and_scripts(live_server):
    page = httpx.get(live_server.url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert '<link rel="icon" href="/web/favicon.svg"' in html
    for control in ("voice", "turn-server", "turn-semantic", "silence", "eagerness", "responder", "instructions",
                    "apply", "text", "send", "level", "transcript", "error"):
        assert f'data-testid="{control}"' in html, control
    for path in ("/favicon.ico", "/web/favicon.svg"):
        icon = httpx.get(live_server.url + path, timeout=10)
        assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
        assert icon.text.lstrip().startswith("<svg")
    for module in ("call.js", "latency.js", "levels.js", "settings.js", "transcript.js", "style.css"):
        assert httpx.get(f"{live_server.url}/web/{module}", timeout=10).status_code == 200, module


def test_call_config_lists_responders(live_server):
    config = httpx.get(live_server.url + "/v1/realtime/calls/config", timeout=10).json()
    assert config["data_channel"] == "oai-events"
    assert config["responder"] == "echo"  # the node's default (KOMBAIN_RESPONDER)
    assert "echo" in config["responders"] and "script" in config["responders"]  # the example IVR loads
    assert "openai" not in config["responders"]  # no KOMBAIN_RESPONDER_URL here


def test_unavailable_responder_is_a_clear_400(live_server):
    for value in ("openai", "nope", "x" * 500):
        r = httpx.post(live_server.url + "/v1/realtime/calls", params={"responder": value}, content=b"v=0",
                       headers={"Content-Type": "application/sdp"}, timeout=10)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "invalid_value" and err["param"] == "responder", err
        assert "echo" in err["message"] and len(err["message"]) < 200, err
