"""Build the configured responder for a session (echo, scripted IVR, or an OpenAI-compatible LLM)."""

from __future__ import annotations

from pathlib import Path

from kombain.server.llm import OpenAIResponder
from kombain.server.settings import Settings
from kombain.streaming.responders import EchoResponder, IvrScript, Responder, ScriptResponder

KINDS = ("echo", "script", "openai")


def load_script(settings: Settings) -> IvrScript | None:
    """Validate configuration at start-up, so a bad menu fails the node, not a caller."""
    if settings.responder not in KINDS:
        raise ValueError(f"KOMBAIN_RESPONDER must be one of {', '.join(KINDS)}, not {settings.responder!r}")
    if settings.responder == "openai" and not settings.responder_url:
        raise ValueError("KOMBAIN_RESPONDER=openai needs KOMBAIN_RESPONDER_URL (an OpenAI-compatible /v1 base URL)")
    example = Path(__file__).resolve().parent.parent / "examples" / "ivr_menu.yaml"
    if settings.responder != "script" and not settings.responder_script:
        # Loaded anyway where it exists, so one call can ask for the IVR (responder=script).
        return IvrScript.load(example) if example.is_file() else None
    return IvrScript.load(settings.responder_script or example)


def build_responder(settings: Settings, script: IvrScript | None) -> Responder:
    """A fresh responder for one session (a script keeps per-call state)."""
    if settings.responder == "script" and script is not None:
        return ScriptResponder(script)
    if settings.responder == "openai":
        return OpenAIResponder(settings.responder_url, settings.responder_model, settings.responder_api_key,
                               settings.responder_system_prompt, settings.responder_timeout_s)
    return EchoResponder()
