"""Per-call options a telephony peer may send (Twilio customParameters, a WebSocket URL's query).

`responder`, `voice`, `language` and `prompt` (instructions for an LLM responder). A phone caller
cannot read an error, so a bad value is logged and the node's default is used instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from kombain.server.responders import KINDS, build_responder
from kombain.server.settings import Settings
from kombain.streaming.call import CallConfig
from kombain.streaming.responders import IvrScript, Responder

_MAX_PROMPT = 4000


def apply_options(settings: Settings, script: IvrScript | None, config: CallConfig,
                  options: Mapping[str, str], log: logging.Logger | logging.LoggerAdapter[logging.Logger],
                  ) -> tuple[CallConfig, Responder | None]:
    """The call's config and responder after the peer's options (None: the node's default)."""
    responder: Responder | None = None
    kind = options.get("responder", "").strip().lower()
    if kind:
        if kind not in KINDS:
            log.warning("unknown responder %r in call options; using %r", kind, settings.responder)
        elif kind == "script" and script is None:
            log.warning("responder=script asked for, but no IVR script is loaded; using %r", settings.responder)
        elif kind == "openai" and not settings.responder_url:
            log.warning("responder=openai asked for, but KOMBAIN_RESPONDER_URL is not set; using %r",
                        settings.responder)
        else:
            responder = build_responder(settings.replace(responder=kind), script)
    if voice := options.get("voice", "").strip():
        config = replace(config, voice=voice[:200])
    if language := options.get("language", "").strip():
        if language.isalpha() and len(language) <= 8:
            config = replace(config, language=language.lower())
        else:
            log.warning("ignoring language %r in call options", language[:40])
    if prompt := options.get("prompt", "").strip():
        config = replace(config, instructions=prompt[:_MAX_PROMPT])
    return config, responder
