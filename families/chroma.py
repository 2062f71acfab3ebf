"""Chroma and Chroma Radiance (comfy.ldm.chroma.model.Chroma and its pixel-space subclass).

Flux-shaped: double-stream blocks with one joint call over [txt; img], then single-stream blocks over
cat(txt, img), with the same patch keys and argument names. The text is T5 alone, unpadded (ComfyUI's
PixArt-style T5 tokenizer, min_length 1), so every row is prompt text or its end token.
Chroma Radiance runs the same blocks on RGB pixels, one token per 16 x 16 patch: the Inspector reads its frame
grid from the model's own patch_size.
"""
from __future__ import annotations

from ..runtime.adapters import FluxAdapter
from ..runtime.interventions import JOINT
from .base import Family, ModelProfile, PreviewDepth

NAME = "Chroma"
PADDING = "real tokens: all text rows (ComfyUI does not pad Chroma's T5 text)"


def detect(model):
    import comfy.ldm.chroma.model as chroma

    if not isinstance(model, chroma.Chroma):
        return None
    radiance = type(model).__name__ == "ChromaRadiance"
    profile = ModelProfile(family=NAME, variant="Chroma Radiance" if radiance else "Chroma", encoder="t5",
                           padding_note=PADDING, alignvid_missing="AlignVid's code publishes no setting for Chroma")
    return FluxAdapter(NAME, len(model.double_blocks), len(model.single_blocks), frozenset({JOINT}), profile=profile,
                       text_first=True)


FAMILY = Family(
    name=NAME,
    supported="Chroma, Chroma Radiance",
    detect=detect,
    preview=(PreviewDepth("chroma", "Chroma", 19, 38, (("chroma",),)),),
    encoders=("t5",),
)
