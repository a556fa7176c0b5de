"""The command line: `serve --help` documents every flag, and clients find the server from the settings."""

from __future__ import annotations

import re

import pytest

from kombain.clients.server_url import default_server_url
from kombain.server.cli import main


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_serve_help_gives_every_flag_its_variable_and_default(capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(capsys, "serve")
    flags = set(re.findall(r"^  (--[a-z-]+)", out, re.MULTILINE))
    assert {"--host", "--port", "--stt-model", "--data-dir", "--log-level", "--ssl-certfile", "--ssl-keyfile"} <= flags
    text = " ".join(out.split())  # argparse wraps lines
    for flag in flags:
        variable = "KOMBAIN_" + flag[2:].replace("-", "_").upper()
        described = text.split(flag, 2)[-1]  # after the usage line's mention, at its description
        assert variable in described.split(" --")[0] and "default" in described.split(" --")[0], flag
    assert "KOMBAIN_<NAME>" in text and "kombain settings" in text


def test_settings_lists_every_variable(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOMBAIN_API_KEYS", "secret-value")
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^KOMBAIN_PORT +8000$", out, re.MULTILINE)
    assert re.search(r"^KOMBAIN_API_KEYS +\(none\) +\[set here\]$", out, re.MULTILINE)
    assert "secret-value" not in out


@pytest.mark.parametrize(("env", "url"), [
    ({}, "http://127.0.0.1:8000"),
    ({"KOMBAIN_PORT": "8123"}, "http://127.0.0.1:8123"),
    ({"KOMBAIN_HOST": "0.0.0.0", "KOMBAIN_PORT": "9000"}, "http://127.0.0.1:9000"),
    ({"KOMBAIN_HOST": "::"}, "http://[::1]:8000"),
    ({"KOMBAIN_HOST": "voice.example.org", "KOMBAIN_SSL_CERTFILE": "/etc/cert.pem"}, "https://voice.example.org:8000"),
    ({"KOMBAIN_URL": "https://lb.example.org/", "KOMBAIN_PORT": "1"}, "https://lb.example.org"),
])
def test_default_server_url(env: dict[str, str], url: str) -> None:
    assert default_server_url(env) == url
