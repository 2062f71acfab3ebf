"""SD3 / SD3.5 (comfy.ldm.modules.diffusionmodules.mmdit.MMDiT).

One joint call per block over [txt; img]; SD3.5 medium's MMDiT-X blocks add an image-only self-attention.
The text is CLIP-L/G rows then T5 rows, padded with pad tokens and no mask.
"""
from __future__ import annotations

from ..runtime.adapters import MMDiTAdapter
from ..runtime.interventions import JOINT, SELF
from .base import Family, ModelProfile, PreviewDepth

NAME = "SD3 (MMDiT)"
PADDING = ("real tokens: all text rows (ComfyUI gives SD3 no T5 mask, so pad-token rows count as text; "
           "connect token_weights to exclude the positive prompt's padding)")


def detect(model):
    import comfy.ldm.modules.diffusionmodules.mmdit as mmdit

    if not isinstance(model, mmdit.MMDiT):
        return None
    has_x_self = any(getattr(b.x_block, "x_block_self_attn", False) for b in model.joint_blocks)
    depth = len(model.joint_blocks)
    variant = {24: "SD3 / SD3.5 medium", 38: "SD3.5 large"}.get(depth, "SD3 (MMDiT)")
    profile = ModelProfile(family=NAME, variant=variant, encoder="sd3", padding_note=PADDING,
                           alignvid_missing="AlignVid's code publishes no setting for SD3")
    return MMDiTAdapter(NAME, depth, 0, frozenset({JOINT} | ({SELF} if has_x_self else set())), profile=profile)


FAMILY = Family(
    name=NAME,
    supported="SD3/SD3.5 (MMDiT)",
    detect=detect,
    preview=(
        PreviewDepth("sd35_large", "SD3.5 large", 38, 0, (("sd3.5_large",),)),
        PreviewDepth("sd3_medium", "SD3 / SD3.5 medium", 24, 0, (("sd3.5_medium",), ("sd3_medium",))),
    ),
    encoders=("sd3",),
)
