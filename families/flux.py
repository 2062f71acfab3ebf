"""Flux.1 (comfy.ldm.flux.model.Flux): dev, schnell, Kontext, Fill.

Double-stream blocks with one joint call over [txt; img], then single-stream blocks over cat(txt, img).
The text is the T5 stream alone, padded to 256 with pad tokens and no mask; StyleModelApply (Flux Redux)
appends an image's rows after it, which only the prompt's token weights tell apart (runtime/prompt_rows.py). The same class also builds
Flux.2 (global modulation, a tuple `vec`, left-padded Mistral/Qwen3 text): served by families/flux2.py.
"""
from __future__ import annotations

from ..runtime.adapters import FluxAdapter
from ..runtime.interventions import JOINT
from ..runtime.prompt_rows import AFTER
from .base import Family, ModelProfile, PreviewDepth

NAME = "Flux"
PADDING = ("real tokens: all text rows (ComfyUI gives Flux no T5 mask, so pad-token rows count as text, and so do "
           "the image rows a style model appends (Flux Redux); connect token_weights, or encode the prompt with "
           "TokenFocus Prompt, to leave out the positive prompt's padding and those rows)")
# StyleModelApply (Flux Redux) appends the image's rows after the prompt's; nothing in the conditioning marks them.
STYLE_ROWS = "the image rows a style model appended (StyleModelApply: Flux Redux)"


def detect(model):
    import comfy.ldm.flux.model as flux

    if not isinstance(model, flux.Flux):
        return None
    if getattr(getattr(model, "params", None), "global_modulation", False):
        return None     # Flux.2: its own module (families/flux2.py)
    profile = ModelProfile(family=NAME, variant="Flux.1", encoder="t5xxl", padding_note=PADDING,
                           alignvid_missing="AlignVid's code publishes no setting for Flux",
                           added_rows=AFTER, added_rows_note=STYLE_ROWS)
    return FluxAdapter(NAME, len(model.double_blocks), len(model.single_blocks), frozenset({JOINT}), profile=profile,
                       text_first=True)


FAMILY = Family(
    name=NAME,
    supported="Flux.1 (dev, schnell, Kontext, Fill)",
    detect=detect,
    preview=(PreviewDepth("flux", "Flux.1", 19, 38, (("flux1-",), ("flux1_",))),),
    encoders=("t5xxl",),
)
