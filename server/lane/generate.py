"""Diffusers generation for the worker process: pipelines loaded once, PNG and MP4 out.

Imports torch and diffusers; only the worker process imports this module.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from kombain.server.lane.jobs import Job, JobKind, LaneError

log = logging.getLogger("kombain.lane.generate")

# Called after every denoising step with (steps done, total); may raise to stop the pipeline.
StepCallback = Callable[[int, int], None]


class Generator:
    """Loads each configured pipeline on first use and keeps it for the worker's lifetime."""

    def __init__(self, image_model: str, video_model: str, threads: int = 1) -> None:
        import diffusers
        import torch

        diffusers.utils.logging.disable_progress_bar()
        if threads > 0:
            torch.set_num_threads(threads)
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.dtype = torch.float16 if self.device == "cuda" else torch.float32
        self._dirs = {JobKind.IMAGE: image_model, JobKind.VIDEO: video_model}
        self._pipes: dict[JobKind, Any] = {}

    def pipeline(self, kind: JobKind) -> Any:
        if kind not in self._pipes:
            self._pipes[kind] = self._load(kind)
        return self._pipes[kind]

    def _load(self, kind: JobKind) -> Any:
        from diffusers import DiffusionPipeline

        path = self._dirs[kind]
        if not path or not Path(path).is_dir():
            raise LaneError(503, f"{kind.value} model directory {path!r} not found on this worker",
                            "model_not_configured", type_="server_error")
        log.info("loading %s pipeline from %s on %s", kind.value, path, self.device)
        pipe = DiffusionPipeline.from_pretrained(path, local_files_only=True, dtype=self.dtype)
        pipe = pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def run(self, job: Job, on_step: StepCallback) -> list[tuple[bytes, str]]:
        """Run the job's pipeline; returns (file bytes, extension) per result."""
        pipe = self.pipeline(job.kind)
        p = job.params

        def step_end(pipeline: Any, i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            total = int(getattr(pipeline, "num_timesteps", 0) or p["num_inference_steps"])
            on_step(i + 1, total)
            return kwargs

        args: dict[str, Any] = {
            "prompt": job.prompt, "width": p["width"], "height": p["height"],
            "num_inference_steps": p["num_inference_steps"], "callback_on_step_end": step_end,
        }
        if p.get("negative_prompt"):
            args["negative_prompt"] = p["negative_prompt"]
        if p.get("seed") is not None:
            args["generator"] = self.torch.Generator(device="cpu").manual_seed(p["seed"])
        with self.torch.inference_mode():
            if job.kind is JobKind.IMAGE:
                out = pipe(num_images_per_prompt=p["n"], output_type="pil", **args)
                return [(_png(img), "png") for img in out.images]
            out = pipe(num_frames=p["num_frames"], output_type="np", **args)
        return [(encode_mp4(np.asarray(out.frames[0]), p["fps"]), "mp4")]


def _png(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def encode_mp4(frames: np.ndarray, fps: int) -> bytes:
    """(frames, H, W, 3) floats in [0, 1] or uint8 -> H.264 MP4 bytes (PyAV)."""
    import av

    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for arr in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr[..., :3]), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()
