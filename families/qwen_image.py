"""Qwen-Image and Qwen-Image-Edit (comfy.ldm.qwen_image.model.QwenImageTransformer2DModel).

60 double-stream blocks, each with one joint attention call over [txt; img] (q, k as [B, L, H·D]); no
single-stream blocks. The text is Qwen2.5-VL's hidden states with the chat template's system prefix cropped
by ComfyUI, so there is no padding. Qwen-Image-Edit uses the same model: its text stream also carries the
vision tokens of the input image in front of the prompt, which the model cannot tell from the prompt's rows: the
prompt's token weights say how many rows are the prompt's (runtime/prompt_rows.py); without them TORA says so.
"""
from __future__ import annotations

from ..runtime.adapters import FluxAdapter
from ..runtime.interventions import JOINT
from ..runtime.prompt_rows import BEFORE
from .base import Family, ModelProfile, PreviewDepth

NAME = "Qwen-Image"
PADDING = ("real tokens: all text rows (ComfyUI crops Qwen-Image's chat template to the prompt, so there is no "
           "padding); with Qwen-Image-Edit, the input image's vision tokens in front of the prompt are left out only "
           "where token weights say how many rows the prompt has")
# TextEncodeQwenImageEdit / …Plus: after the crop, the user turn is [(Picture k: )<|vision_start|> vision tokens
# <|vision_end|>]... then the prompt and the template's closing rows. Nothing in the conditioning counts them.
VISION_ROWS = ("the input image's vision tokens with their markers (TextEncodeQwenImageEdit / "
               "TextEncodeQwenImageEditPlus)")


def detect(model):
    import comfy.ldm.qwen_image.model as qwen

    if not isinstance(model, qwen.QwenImageTransformer2DModel):
        return None
    profile = ModelProfile(family=NAME, variant="Qwen-Image / Qwen-Image-Edit", encoder="qwen25_7b",
                           padding_note=PADDING, alignvid_missing="AlignVid's code publishes no setting for Qwen-Image",
                           added_rows=BEFORE, added_rows_note=VISION_ROWS)
    return FluxAdapter(NAME, len(model.transformer_blocks), 0, frozenset({JOINT}), profile=profile, text_first=True)


FAMILY = Family(
    name=NAME,
    supported="Qwen-Image / Qwen-Image-Edit (Token Importance: Qwen-Image's text prompts; not Edit's, whose vision rows it cannot count)",
    detect=detect,
    preview=(PreviewDepth("qwen_image", "Qwen-Image / Edit", 60, 0, (("qwen_image",),)),),
    encoders=("qwen25_7b",),     # Qwen-Image; Edit's conditioning adds vision rows (runtime/tokens.py EDIT_NOTE)
)
