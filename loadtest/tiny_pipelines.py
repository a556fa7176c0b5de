"""Tiny randomly initialised diffusers pipelines, saved like a user's model directory.

Used by the lane tests and by the load test's saturated-lane runs. Built in the calling process
(torch is fine there: not the voice path); the server's workers load them through the same
`DiffusionPipeline.from_pretrained(dir, local_files_only=True)` path users get.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any


def _tokenizer(folder: Path) -> Any:
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = list(string.ascii_lowercase + string.digits + ".,!?'-")
    tokens = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]
    merges = ["#version: 0.2", "t h", "th e</w>", "a n", "an d</w>"]
    tokens += ["th", "the</w>", "an", "and</w>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("\n".join(merges) + "\n")
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=16)


def _text_encoder(vocab_size: int) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        hidden_size=16, intermediate_size=16, num_attention_heads=2, num_hidden_layers=1,
        vocab_size=vocab_size, max_position_embeddings=16, projection_dim=16,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))


def _vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 8), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=4,
        layers_per_block=1, sample_size=32,
    )


def _scheduler() -> Any:
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_schedule="linear", beta_start=0.00085, beta_end=0.012,
                         clip_sample=False, steps_offset=1)


def build_image_pipeline(folder: Path, channels: tuple[int, int] = (8, 16)) -> Path:
    """A tiny StableDiffusionPipeline saved to `folder` (wider `channels`: more work per step)."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    tok = _tokenizer(folder / "_tok")
    unet = UNet2DConditionModel(
        block_out_channels=channels, layers_per_block=1, sample_size=16, in_channels=4,
        out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
        attention_head_dim=2, norm_num_groups=4,
    )
    pipe = StableDiffusionPipeline(
        unet=unet, vae=_vae(), text_encoder=_text_encoder(len(tok)), tokenizer=tok,
        scheduler=_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder / "tiny-sd")
    return folder / "tiny-sd"


def build_video_pipeline(folder: Path) -> Path:
    """A tiny AnimateDiffPipeline (UNet + MotionAdapter) saved to `folder`."""
    import torch
    from diffusers import AnimateDiffPipeline, MotionAdapter, UNet2DConditionModel

    torch.manual_seed(0)
    tok = _tokenizer(folder / "_tok")
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4,
        out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
        attention_head_dim=2, norm_num_groups=4,
    )
    adapter = MotionAdapter(
        block_out_channels=(8, 16), motion_layers_per_block=1, motion_norm_num_groups=4,
        motion_num_attention_heads=2, motion_max_seq_length=32,
    )
    pipe = AnimateDiffPipeline(
        unet=unet, motion_adapter=adapter, vae=_vae(), text_encoder=_text_encoder(len(tok)),
        tokenizer=tok, scheduler=_scheduler(), feature_extractor=None, image_encoder=None,
    )
    pipe.save_pretrained(folder / "tiny-animatediff")
    return folder / "tiny-animatediff"
