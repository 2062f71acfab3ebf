"""A MASK (per frame for video) as one weight per image/video token: where regional token weights act.

The tokens of a latent [B, C, T, H, W] (or [B, C, H, W]) under a (pt, ph, pw) patch are laid out frame by
frame, row by row (core.attention_stats.token_grid), as every supported model flattens them. A mask frame
covers the area of each token it overlaps (area average, so a soft edge stays soft). Video VAEs put the
first pixel frame in latent frame 0 and each next `temporal` frames in one latent frame (Wan and
HunyuanVideo: 4), so a mask with one frame per pixel frame is averaged the same way; a single frame
applies to every latent frame. Pure torch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

VIDEO_TEMPORAL_COMPRESSION = 4


def as_frames(mask: torch.Tensor) -> torch.Tensor:
    """A ComfyUI MASK ([H, W] or [frames, H, W]) as float32 [frames, H, W] in [0, 1] on the CPU."""
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3 or mask.shape[-1] == 0 or mask.shape[-2] == 0 or mask.shape[0] == 0:
        raise ValueError(f"a MASK is [H, W] or [frames, H, W], got shape {tuple(mask.shape)}")
    mask = mask.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(mask).all()):
        raise ValueError("the mask holds values that are not finite numbers")
    return mask.clamp(0.0, 1.0)


def latent_frames(mask: torch.Tensor, frames: int, temporal: int = VIDEO_TEMPORAL_COMPRESSION) -> torch.Tensor:
    """[frames, H, W]: the mask's frames grouped as the video VAE groups pixel frames into latent frames."""
    count = mask.shape[0]
    if count == frames:
        return mask
    if count == 1:
        return mask.expand(frames, -1, -1)
    if count == temporal * (frames - 1) + 1:
        groups = [mask[:1]] + [mask[1 + temporal * i:1 + temporal * (i + 1)] for i in range(frames - 1)]
        return torch.stack([g.mean(0) for g in groups])
    raise ValueError(
        f"the mask has {count} frames for a video of {frames} latent frames: give 1 frame (the same region "
        f"throughout), {frames}, or one per video frame ({temporal * (frames - 1) + 1})")


def token_weights_of_mask(mask: torch.Tensor, grid: tuple) -> torch.Tensor:
    """One weight per token of a (T, H, W) token grid, frame-major then row-major: [T·H·W]."""
    frames, height, width = grid
    per_frame = latent_frames(mask, frames)
    pooled = F.adaptive_avg_pool2d(per_frame[:, None], (height, width))[:, 0]
    return pooled.reshape(-1)
