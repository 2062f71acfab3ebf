"""Wan 2.1 / 2.2 (comfy.ldm.wan.model.WanModel and its subclasses).

Cross-attention to a fixed umT5 context, zero-padded to 512 rows with no mask; Wan 2.1 i2v puts 257 CLIP
image rows in front of it and adds an image cross-attention branch. Each block calls self-attention, then
(i2v) the image cross-attention, then the text cross-attention. Wan 2.2 A14B is two models (high- and
low-noise experts) with the t2v block layout: a workflow patches both, or only the high-noise one.

The variant classes keep that block layout and add attention calls of their own, which are not the prompt's text
cross-attention and are left alone: VACE blocks (called after some main blocks, outside their hooks; they get the
unedited context), HuMo's audio cross-attention (a third call inside each block), Animate's face adapters (no
transformer_options) and S2V's audio injectors (after the blocks). Camera, Animate and Fun control use the i2v
layout (CLIP image rows first). Extra video tokens: the Fun reference image's (ref_conv) before the frame grid,
HuMo's and S2V's reference and motion frames after it. S2V's blocks get transformer_options only from ComfyUI 0.12
on: refused before that.
"""
from __future__ import annotations

from ..runtime.adapters import WanAdapter
from ..runtime.interventions import CROSS_IMAGE, CROSS_TEXT, SELF
from .base import (
    GRID_AFTER_REFERENCE, GRID_FIRST, AlignVidSetting, Family, ModelProfile, PreviewDepth, UnsupportedModelError,
)

NAME = "Wan"

# The official AlignVid Wan2.1-I2V-14B block list (its code's ALIGNVID_FOREGROUND_BLOCKS): 28 of 40 blocks,
# calibrated on that model only.
WAN21_I2V_14B_BLOCKS = "0,2-7,10-20,25-32,37,38"
# Wan 2.2 A14B hands the denoising from the high-noise to the low-noise expert at these sigmas (its
# published boundaries): t2v (16 input channels) 0.875, i2v (36: noise, mask, image latent) 0.900.
WAN22_EXPERT_BOUNDARY = {16: 0.875, 36: 0.9}

PADDING = "real tokens: the non-zero rows of the T5 context (its padding is zeros and stays untouched)"

_I2V_14B = AlignVidSetting(
    source="the official AlignVid Wan2.1 i2v code (its defaults: the paper's main setting)",
    # Q is scaled for the image branch and the same scaled Q meets the text keys scaled by gamma: gamma^2.
    factors=((CROSS_IMAGE, 1, 0), (CROSS_TEXT, 1, 1)),
    blocks=WAN21_I2V_14B_BLOCKS,
    blocks_note="its block list, calibrated on Wan2.1-I2V-14B",
    cfg=1.0, sampler="uni_pc_bh2",
)
_T2V_40 = AlignVidSetting(
    source="the official AlignVid Wan code's text-to-video path (text keys x gamma; no image branch)",
    factors=((CROSS_TEXT, 0, 1),),
    blocks="all",
    blocks_note=("no calibration exists for this model (the published list was calibrated on Wan2.1-I2V-14B): "
                 "all blocks"),
    cfg=1.0,
)


def _t2v_setting(blocks: int) -> AlignVidSetting | None:
    return _T2V_40 if blocks == 40 else None


def detect(model):
    import comfy.ldm.wan.model as wan

    if not isinstance(model, wan.WanModel):
        return None
    s2v = isinstance(model, getattr(wan, "WanModel_S2V", ()))
    if s2v and not _s2v_blocks_take_options(wan):
        raise UnsupportedModelError(
            "Wan 2.2 S2V is not supported on this ComfyUI: its forward hands its blocks no transformer_options, so "
            "no TokenFocus hook can reach their attention calls without copying the forward (ComfyUI 0.12 and "
            f"later hand them over). Supported: {FAMILY.supported}.")
    i2v = isinstance(model.blocks[0].cross_attn, wan.WanI2VCrossAttention)
    depth = len(model.blocks)
    kinds = {SELF, CROSS_TEXT} | ({CROSS_IMAGE} if i2v else set())
    special = _special_variant(model, wan)
    if i2v:
        variant = "Wan 2.1 i2v 14B" if depth == 40 else "Wan 2.1 i2v (CLIP image branch)"
        alignvid = _I2V_14B if depth == 40 else None
    else:
        variant = {40: "Wan 14B with text cross-attention only (2.1 t2v 14B, or a 2.2 A14B expert)",
                   30: "Wan 2.1 1.3B or 2.2 ti2v 5B"}.get(depth, "Wan (text cross-attention)")
        alignvid = _t2v_setting(depth)
    if special:
        variant = f"Wan {special} ({depth} blocks{', CLIP image branch' if i2v else ''})"
    missing = "" if alignvid else (
        f"AlignVid's code publishes settings for Wan2.1-I2V-14B and the 40-block text-to-video path; this is {variant} "
        f"with {depth} blocks")
    # Only the plain, VACE and camera classes come as Wan 2.2 A14B high/low-noise expert pairs; HuMo, Animate and
    # S2V are single models.
    experts = type(model) in (wan.WanModel, getattr(wan, "VaceWanModel", None), getattr(wan, "CameraWanModel", None))
    profile = ModelProfile(
        family=NAME, variant=variant, encoder="umt5xxl", padding_note=PADDING,
        # The Fun reference image's tokens (ref_conv) come before the video's; HuMo's and S2V's reference and
        # motion frames come after them.
        grid_layout=GRID_AFTER_REFERENCE if getattr(model, "ref_conv", None) is not None else GRID_FIRST,
        alignvid=alignvid, alignvid_missing=missing,
        expert_boundary=(WAN22_EXPERT_BOUNDARY.get(getattr(model, "in_dim", 16))
                         if experts and not i2v and depth == 40 else None),
    )
    return WanAdapter(NAME, depth, 0, frozenset(kinds), profile=profile, i2v_cross_attention=i2v)


def _s2v_blocks_take_options(wan) -> bool:
    """Whether WanModel_S2V hands its (replaced) blocks the transformer_options (ComfyUI 0.12 does, 0.3.64 not)."""
    import inspect

    try:
        source = inspect.getsource(wan.WanModel_S2V.forward_orig)
    except (AttributeError, OSError, TypeError):
        return False
    return 'transformer_options=args["transformer_options"]' in source


def _special_variant(model, wan) -> str:
    """The name of a Wan variant class, whose extra attention calls (VACE blocks, audio cross-attention, face
    adapters, audio injectors) run outside the text cross-attention TokenFocus acts on."""
    try:
        from comfy.ldm.wan.model_animate import AnimateWanModel
    except ImportError:
        AnimateWanModel = None
    for cls, name in ((getattr(wan, "VaceWanModel", None), "VACE"), (getattr(wan, "CameraWanModel", None), "Fun camera"),
                      (getattr(wan, "HumoWanModel", None), "HuMo"), (AnimateWanModel, "2.2 Animate"),
                      (getattr(wan, "WanModel_S2V", None), "2.2 S2V")):
        if cls is not None and isinstance(model, cls):
            return name
    return "Fun with a reference image" if getattr(model, "ref_conv", None) is not None else ""


FAMILY = Family(
    name=NAME,
    supported="Wan 2.1/2.2 (t2v, i2v, ti2v 5B, A14B experts, VACE, camera, Fun, HuMo, Animate, S2V on ComfyUI 0.12+)",
    detect=detect,
    preview=(
        PreviewDepth("wan_14b", "Wan 2.1/2.2 14B", 40, 0, (("wan", "14b"),)),
        PreviewDepth("wan_small", "Wan 2.1 1.3B / 2.2 5B", 30, 0, (("wan", "1.3b"), ("wan", "5b"))),
    ),
    encoders=("umt5xxl",),
    refuses=("Wan 2.2 S2V on a ComfyUI whose S2V blocks get no transformer_options (0.3.64)",),
)
