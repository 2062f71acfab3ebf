"""Flux.2 (dev and Klein; comfy.ldm.flux.model.Flux with global modulation, ComfyUI 0.12 and later).

Flux.1's block layout and patch keys: double-stream blocks with one joint call over [txt; img], then
single-stream blocks over cat(txt, img); `vec` is a tuple of modulations shared by all blocks (TokenFocus
never reads it). The text is the stacked hidden states of Mistral 3 (dev) or Qwen3 (Klein) over a chat
template; ComfyUI left-pads it with zero rows up to 512 (model_base.Flux2.extra_conds), so a short prompt is
a few real rows at the end of 512: the zero rows are padding, left out of statistics and weights. Klein's
Qwen3 tokenizer itself pads with pad tokens to 512 on the right: those rows are encoded pad tokens and count
as text. Told apart from Flux.1 by `global_modulation`, from each other by the text width.
"""
from __future__ import annotations

from ..runtime.adapters import FluxAdapter
from ..runtime.interventions import JOINT
from .base import Family, ModelProfile, PreviewDepth

NAME = "Flux.2"
PADDING = ("real tokens: the non-zero text rows (ComfyUI left-pads Flux.2's text with zero rows up to 512; "
           "Klein's pad-token rows after the prompt count as text)")
# Text width = 3 stacked hidden-state layers of the text encoder.
VARIANTS = {3 * 5120: ("Flux.2 dev", "mistral3_24b"), 3 * 2560: ("Flux.2 Klein 4B", "qwen3_4b"),
            3 * 4096: ("Flux.2 Klein 9B", "qwen3_8b")}


def detect(model):
    import comfy.ldm.flux.model as flux

    if not isinstance(model, flux.Flux) or not getattr(getattr(model, "params", None), "global_modulation", False):
        return None
    variant, encoder = VARIANTS.get(model.params.context_in_dim, ("Flux.2", "mistral3_24b"))
    profile = ModelProfile(family=NAME, variant=variant, encoder=encoder, padding_note=PADDING,
                           alignvid_missing="AlignVid's code publishes no setting for Flux.2")
    return FluxAdapter(NAME, len(model.double_blocks), len(model.single_blocks), frozenset({JOINT}), profile=profile,
                       text_first=True, zero_rows_are_padding=True)


FAMILY = Family(
    name=NAME,
    supported="Flux.2 (dev, Klein; ComfyUI 0.12 and later)",
    detect=detect,
    preview=(
        PreviewDepth("flux2_dev", "Flux.2 dev", 8, 48, (("flux2", "dev"), ("flux2_dev",), ("flux.2", "dev"))),
        PreviewDepth("flux2_klein", "Flux.2 Klein", 5, 20, (("flux2", "klein"), ("flux-2-klein",))),
    ),
    encoders=("mistral3_24b", "qwen3_4b", "qwen3_8b"),     # dev; Klein 4B, 9B
)
