"""LTX-Video (comfy.ldm.lightricks.model.LTXVModel).

28 blocks, each a self-attention then a cross-attention to a T5 context (projected once, the same in every block
and step). ComfyUI pads the T5 text to 128 rows and passes the T5 attention mask with the conditioning: that
mask says which rows are prompt text.
"""
from __future__ import annotations

from ..runtime.adapters import MaskedCrossAttentionAdapter
from ..runtime.interventions import CROSS_TEXT, SELF
from .base import Family, ModelProfile, PreviewDepth

NAME = "LTX-Video"
PADDING = "real tokens: the rows the T5 attention mask marks (its padding stays untouched)"


def detect(model):
    import comfy.ldm.lightricks.model as ltx

    if not isinstance(model, ltx.LTXVModel):
        return None
    profile = ModelProfile(family=NAME, variant="LTX-Video", encoder="t5", padding_note=PADDING, patch=(1, 1, 1),
                           alignvid_missing="AlignVid's code publishes no setting for LTX-Video")
    return MaskedCrossAttentionAdapter(NAME, len(model.transformer_blocks), 0, frozenset({SELF, CROSS_TEXT}),
                                       profile=profile)


FAMILY = Family(
    name=NAME,
    supported="LTX-Video",
    detect=detect,
    preview=(PreviewDepth("ltxv", "LTX-Video", 28, 0, (("ltx-video",), ("ltxv",))),),
    encoders=("t5",),
)
