"""The registry of model families: one module per family, iterated here; nothing else names a family.

Adding a family is one module with a `FAMILY` (families/base.py says what it declares), listed in
FAMILY_MODULES, its tiny-model spec in tests/integration/tiny_models.py, and its tests (README,
"Adding a model family").
"""
from __future__ import annotations

import json

from . import chroma, flux, flux2, hunyuan_video, kandinsky5, lumina, ltx2, ltxv, qwen_image, refused, sd3, wan
from .base import Family, UnsupportedModelError

# Order matters only where one class subclasses another: a subclass's family comes first.
FAMILY_MODULES = (wan, sd3, flux2, flux, chroma, hunyuan_video, qwen_image, ltx2, ltxv, lumina, kandinsky5, refused)
FAMILIES: tuple[Family, ...] = tuple(m.FAMILY for m in FAMILY_MODULES)


def supported() -> str:
    return "; ".join(f.supported for f in FAMILIES if f.supported)


def detect(model_patcher):
    """The adapter for a ModelPatcher's diffusion model, or a clear error (naming the variant, and what is
    supported) for anything TokenFocus does not serve."""
    model = model_patcher.get_model_object("diffusion_model")
    for family in FAMILIES:
        adapter = family.detect(model)
        if adapter is not None:
            return adapter
    raise UnsupportedModelError(f"TokenFocus does not support {type(model).__name__}. Supported: {supported()}.")


def families_for_encoder(encoder: str) -> list[str]:
    """Names of the families whose variants are conditioned by this text-encoder layout."""
    return [f.name for f in FAMILIES if encoder in f.encoders]


def preview_table() -> list[dict]:
    """The preview's depth table: one entry per PreviewDepth, with the family's name (as messages say it)."""
    return [
        {"key": p.key, "label": p.label, "name": f.name, "double": p.double, "single": p.single,
         "files": [list(parts) for parts in p.files]}
        for f in FAMILIES for p in f.preview
    ]


PREVIEW_MODULE_HEADER = (
    "// Generated from the family modules (families/*.py) by `python tests/generate_families_js.py`\n"
    "// (tests/test_family_registry.py checks it is current). Do not edit by hand.\n"
    "// `name` is what the node's messages call the model; `files` lists substrings that must all occur in a\n"
    "// loader's file name (lowercased).\n"
)


def preview_module() -> str:
    """The text of js/families.js."""
    body = "[\n" + "".join(f"  {json.dumps(entry)},\n" for entry in preview_table()) + "]"
    return f"{PREVIEW_MODULE_HEADER}export const FAMILIES = {body};\n"
