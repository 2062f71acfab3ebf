"""Kandinsky 5 (comfy.ldm.kandinsky5.model.Kandinsky5: video Lite / Pro, and Kandinsky5Image), ComfyUI 0.12 and later.

Text blocks run over the Qwen2.5-VL rows first; then each visual block calls self-attention of the video tokens,
then cross-attention to that text (q, k as [B, H, L, D]). The model marks its visual blocks itself
(transformer_options["block_index"]), so attention calls are placed by that mark: Attention Temperature, Token
Reweighting, Importance Guidance and the Attention Inspector act there.

No hook reaches a block's text: the block-replace path (patches_replace["dit"]) calls the block with keyword
names its forward does not take (x=, context= for visual_embed, text_embed), a TypeError inside ComfyUI for any
pack that installs one, and the model calls no patch after its blocks. Token Spacing and Residual Alignment
refuse it, saying so.
"""
from __future__ import annotations

from ..runtime.adapters import MarkedCrossAttentionAdapter
from ..runtime.interventions import CROSS_TEXT, SELF
from .base import Family, ModelProfile, PreviewDepth

NAME = "Kandinsky 5"
PADDING = "real tokens: all text rows (ComfyUI does not pad Kandinsky 5's Qwen2.5-VL text)"
TEXT_EDITS_MISSING = (
    "no hook reaches the text its blocks receive: ComfyUI's block-replace path for Kandinsky 5 fails with a "
    "TypeError (its block wrapper passes x= and context= to a block whose forward takes visual_embed and "
    "text_embed) and the model calls no patch after its blocks. The nodes that act on attention (Attention "
    "Temperature, Token Reweighting, Importance Guidance, Attention Inspector) work on it")


def detect(model):
    try:
        import comfy.ldm.kandinsky5.model as k5
    except ImportError:
        return None
    if not isinstance(model, k5.Kandinsky5):
        return None
    image = getattr(model, "model_dim", None) == 2560 and getattr(model, "visual_embed_dim", None) == 64
    variant = "Kandinsky 5 Image" if image else "Kandinsky 5 (video)"
    profile = ModelProfile(family=NAME, variant=variant, encoder="qwen25_7b_kandinsky5", padding_note=PADDING,
                           alignvid_missing="AlignVid's code publishes no setting for Kandinsky 5",
                           text_edits_missing=TEXT_EDITS_MISSING)
    return MarkedCrossAttentionAdapter(NAME, len(model.visual_transformer_blocks), 0, frozenset({SELF, CROSS_TEXT}),
                                       profile=profile)


FAMILY = Family(
    name=NAME,
    supported="Kandinsky 5 (video, image; ComfyUI 0.12 and later; not Token Spacing or Residual Alignment)",
    detect=detect,
    # The image model first: its files ("kandinsky5lite_t2i") also name "lite".
    preview=(
        PreviewDepth("kandinsky5_image", "Kandinsky 5 Image", 50, 0,
                     (("kandinsky5", "t2i"), ("kandinsky5", "i2i"), ("kandinsky5", "image"))),
        PreviewDepth("kandinsky5_pro", "Kandinsky 5 Pro (video)", 60, 0, (("kandinsky5", "pro"),)),
        PreviewDepth("kandinsky5_lite", "Kandinsky 5 Lite (video)", 32, 0, (("kandinsky5",),)),
    ),
    encoders=("qwen25_7b_kandinsky5",),    # Qwen2.5-VL rows; CLIP-L gives only the pooled vector
    refuses=("Token Spacing and Residual Alignment on Kandinsky 5",),
)
