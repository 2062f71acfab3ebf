"""Model classes TokenFocus knows it cannot serve, and why: refused with the reason, never accepted silently."""
from __future__ import annotations

from .base import Family, UnsupportedModelError

NAME = "refused"

# (module, class name, model, why) — looked up only if the module imports on this ComfyUI.
REFUSED = (
    ("comfy.ldm.pixart.pixartms", "PixArtMS", "PixArt",
     "its forward offers no per-block patch point (patches_replace['dit']) and its attention calls pass no "
     "transformer_options, so it cannot be hooked without copying its forward"),
    ("comfy.ldm.hydit.models", "HunYuanDiT", "HunyuanDiT",
     "its block patch point and its attention calls receive no transformer_options, so no TokenFocus hook can "
     "tell which block or step it is in without copying its forward"),
)


def detect(model):
    import importlib

    for module_name, class_name, what, why in REFUSED:
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue
        if isinstance(model, cls):
            raise UnsupportedModelError(f"TokenFocus cannot act on {what}: {why}.")
    return None


FAMILY = Family(name=NAME, supported="", detect=detect, refuses=tuple(r[2] for r in REFUSED))
