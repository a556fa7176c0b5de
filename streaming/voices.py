"""Piper voices: which ones exist (bundled, configured, a voices directory) and loading one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kombain.streaming.models import ModelNotFound, piper_voice_path

BUNDLED_VOICE = "en_US-joe-medium"


class UnknownVoice(ModelNotFound):
    """A voice id that is in no catalog."""


@dataclass(frozen=True, slots=True)
class VoiceInfo:
    """What a client may know about a voice, read from its `.onnx.json` without loading it."""

    id: str
    path: Path
    language: str
    sample_rate: int
    quality: str


def voice_info(path: Path) -> VoiceInfo:
    """Describe the Piper voice at `path` (its config `path + '.json'` must be beside it)."""
    config_path = Path(f"{path}.json")
    if not config_path.is_file():
        raise ModelNotFound(f"voice {path} has no config file {config_path.name} beside it")
    with open(config_path, encoding="utf-8") as f:
        cfg = json.load(f)
    language = cfg.get("language", {}).get("code") or cfg.get("espeak", {}).get("voice", "")
    audio = cfg.get("audio", {})
    return VoiceInfo(
        id=path.name.removesuffix(".onnx"),
        path=path,
        language=str(language),
        sample_rate=int(audio.get("sample_rate", 22050)),
        quality=str(audio.get("quality", "")),
    )


def discover_voices(default: str = BUNDLED_VOICE, voices_dir: Path | None = None) -> tuple[str, dict[str, VoiceInfo]]:
    """The default voice's id and every known voice by id: the bundled one, `default`, `voices_dir/*.onnx`."""
    catalog: dict[str, VoiceInfo] = {}
    try:
        bundled = voice_info(piper_voice_path(BUNDLED_VOICE))
        catalog[bundled.id] = bundled
    except ModelNotFound:
        pass  # not installed: fine if another voice is configured
    if voices_dir is not None:
        if not voices_dir.is_dir():
            raise ModelNotFound(f"voices directory {voices_dir} does not exist")
        for path in sorted(voices_dir.glob("*.onnx")):
            if Path(f"{path}.json").is_file():
                info = voice_info(path)
                catalog[info.id] = info
    if default in catalog:
        return default, catalog
    if voices_dir is not None and (voices_dir / f"{default}.onnx").is_file():
        raise ModelNotFound(f"voice {default!r} in {voices_dir} has no .onnx.json config beside it")
    info = voice_info(piper_voice_path(default))
    catalog[info.id] = info
    return info.id, catalog


def load_voice(info: VoiceInfo, threads: int = 1) -> object:
    """Load a Piper voice with an ONNX session of `threads` threads (blocking; call in a thread).

    One thread per session keeps concurrent syntheses from fighting over the cores: the pool
    runs as many syntheses side by side as it has workers instead.
    """
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with open(f"{info.path}.json", encoding="utf-8") as f:
        config = PiperConfig.from_dict(json.load(f))
    session = onnxruntime.InferenceSession(str(info.path), sess_options=opts, providers=["CPUExecutionProvider"])
    return PiperVoice(session=session, config=config)
