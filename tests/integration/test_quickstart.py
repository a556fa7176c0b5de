"""The README's Quick start, run as written against a live server: every shell command and Python
block after `make serve` (which the live server stands in for), so the README cannot drift.

Three things are changed, and only these: the server address (`http://127.0.0.1:8000` becomes the
live server's; the clients get KOMBAIN_URL / KOMBAIN_PORT, as a reader who ran `make serve PORT=...`
would set them), the scratch directory (`/tmp/` and TMPDIR, so parallel runs share no files), and
`.venv/bin/` (the venv running the tests).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from tests.conftest import ROOT

README = ROOT / "README.md"
PLACEHOLDER = "http://127.0.0.1:8000"
AUDIO_SUFFIXES = {"mp3", "wav", "opus", "ogg", "flac", "aac", "pcm"}


def quick_start_blocks() -> list[tuple[str, str]]:
    """(language, code) of each fenced block in the README's Quick start section."""
    text = README.read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```(\w+)\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)


def _untracked() -> set[str]:
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return {line[3:] for line in out.splitlines() if line.startswith("??")}


def test_readme_quick_start_runs_as_written(live_server, tmp_path):
    blocks = quick_start_blocks()
    shell = [code for lang, code in blocks if lang == "sh" and not code.lstrip().startswith("make ")]
    python = [code for lang, code in blocks if lang == "python"]
    assert shell and python, "the Quick start has client commands and a Python block"
    git = shutil.which("git") is not None and (ROOT / ".git").exists()
    before = _untracked() if git else set()
    env = dict(os.environ, KOMBAIN_URL=live_server.url, KOMBAIN_PORT=str(live_server.port),
               TMPDIR=str(tmp_path))
    env.pop("KOMBAIN_HOST", None)
    # `.venv/bin/...` in the README: this test's interpreter is that venv's (or CI's equivalent).
    venv_bin = os.path.dirname(sys.executable)

    def adapt(code: str) -> str:
        return (code.replace(PLACEHOLDER, live_server.url).replace("/tmp/", f"{tmp_path}/")
                .replace(".venv/bin/", venv_bin + "/"))

    outputs = []
    for code in shell:
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", adapt(code)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{code}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        outputs.append(proc.stdout)
    for code in python:
        # A Python block is a complete script; the one shown is the examples/ file it names.
        name = re.match(r"# (examples/\S+\.py)", code)
        assert name and (ROOT / name.group(1)).read_text() == code, "README block == its examples/ file"
        script = tmp_path / "block.py"
        script.write_text(adapt(code))
        proc = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, f"{code}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        outputs.append(proc.stdout)
    said = "\n".join(outputs).lower()
    # What each client should have printed: the streamed file's final, the uploaded file's text,
    # the spoken turn heard and answered, the SDK's transcript.
    assert "final" in said and "across the table" in said, said
    assert "go forward" in said and "answered:" in said, said
    for written in ("hello.mp3", "kombain-hello.mp3"):
        data = (tmp_path / written).read_bytes()
        assert len(data) > 2000 and (data[:3] == b"ID3" or data[0] == 0xFF), written  # an MP3 stream
    assert (tmp_path / "kombain-answer.wav").stat().st_size > 24000
    if git:  # what the Quick start writes is audio; other new files would be someone else's work
        left = {p for p in _untracked() - before if p.rsplit(".", 1)[-1] in AUDIO_SUFFIXES}
        assert not left, f"the Quick start left files in the checkout: {left}"
