"""Flux.1 (comfy.ldm.flux.model.Flux): dev, schnell, Kontext, Fill.

Double-stream blocks with one joint call over [txt; img], then single-stream blocks over cat(txt, img).
The text is the T5 stream alone, padded to 256 with pad tokens and no mask. The same class also builds
Flux.2 (global modulation, a tuple `vec`, left-padded Mistral/Qwen3 text): served by families/flux2.py.
"""
from __future__ import annotations

from ..runtime.adapters import FluxAdapter
from ..runtime.interventions import JOINT
from .base import Family, ModelProfile, PreviewDepth

NAME = "Flux"
PADDING = ("real tokens: all text rows (ComfyUI gives Flux no T5 mask, so pad-token rows count as text; "
           "connect token_weights to exclude the positive prompt's padding)")


def detect(model):
    import comfy.ldm.flux.model as flux

    if not isinstance(model, flux.Flux):
        return None
    if getattr(getattr(model, "params", None), "global_modulation", False):
        return None     # Flux.2: its own module (families/flux2.py)
    profile = ModelProfile(family=NAME, variant="Flux.1", encoder="t5xxl", padding_note=PADDING,
                           alignvid_missing="AlignVid's code publishes no setting for Flux")
    return FluxAdapter(NAME, len(model.double_blocks), len(model.single_blocks), frozenset({JOINT}), profile=profile,
                       text_first=True)


FAMILY = Family(
    name=NAME,
    supported="Flux.1 (dev, schnell, Kontext, Fill)",
    detect=detect,
    preview=(PreviewDepth("flux", "Flux.1", 19, 38, (("flux1-",), ("flux1_",))),),
    encoders=("t5xxl",),
)
