"""Z-Image (Turbo and base) and Lumina 2 / Neta / NewBie (comfy.ldm.lumina.model.NextDiT).

Single-stream blocks over one joint sequence [caption; image] with one attention call each (q, k as
[B, H, L, D]); before them, refiner blocks attend over the caption alone and the image alone. Z-Image pads the
caption inside the model to a multiple of 32 tokens with a learned pad token: those rows are not prompt text.
Its text is Qwen3-4B's hidden states of the whole chat template (no padding, no crop); Lumina 2's is Gemma 2's,
unpadded.

NextDiT offers no block-replace hook (patches_replace["dit"]). On a ComfyUI that marks its blocks
(transformer_options["block_index"], set by the model) and calls patches["double_block"] after each block, the
runtime places attention calls by that mark and edits a block's text after the block before it: every block
but the first can have its inputs edited. Older ComfyUI (0.3.64) offers neither: refused there, saying why.
"""
from __future__ import annotations

from ..runtime.adapters import MarkedJointAdapter
from ..runtime.interventions import JOINT
from .base import Family, ModelProfile, PreviewDepth, UnsupportedModelError

NAME = "Z-Image / Lumina 2"
PADDING_Z = ("real tokens: the conditioning's rows (the whole chat template, as ComfyUI encodes it); the pad "
             "rows Z-Image adds inside the model up to a multiple of 32 are left out and untouched")
PADDING_LUMINA = "real tokens: all text rows (ComfyUI does not pad Lumina 2's Gemma text)"
FIRST_BLOCK_NOTE = ("NextDiT offers a patch point only after each block, so block inputs can be edited from "
                    "block 1 on; block 0 receives the caption refiner's output untouched")


def detect(model):
    try:
        import comfy.ldm.lumina.model as lumina
    except ImportError:
        return None
    if not isinstance(model, lumina.NextDiT):
        return None
    z_image = _is_z_image(model)
    what = "Z-Image" if z_image else "Lumina 2"
    if not _marks_its_blocks(type(model)):
        raise UnsupportedModelError(
            f"{what} is not supported on this ComfyUI: its NextDiT offers no per-block patch point and does not "
            "mark its blocks in transformer_options, so no TokenFocus hook can tell which block an attention call "
            "belongs to without copying its forward (ComfyUI 0.12 and later mark them). "
            f"Supported here: {_supported_elsewhere()}.")
    if getattr(model, "siglip_embedder", None) is not None:
        raise UnsupportedModelError(
            "Z-Image Omni is not supported: its caption stream interleaves reference captions and SigLIP image "
            "rows with the prompt, so the prompt's rows cannot be found from the conditioning. "
            f"Supported: {FAMILY.supported}.")
    multiple = getattr(model, "pad_tokens_multiple", None) or 1
    profile = ModelProfile(
        family=NAME, variant="Z-Image" if z_image else "Lumina 2 / Neta", encoder="qwen3_4b" if z_image else "gemma2_2b",
        padding_note=PADDING_Z if multiple > 1 else PADDING_LUMINA,
        alignvid_missing=f"AlignVid's code publishes no setting for {what}",
        block_note=FIRST_BLOCK_NOTE,
    )
    return MarkedJointAdapter(NAME, len(model.layers), 0, frozenset({JOINT}), profile=profile, text_multiple=multiple)


def _is_z_image(model) -> bool:
    import torch

    # Z-Image's modulation takes the 256-wide timestep embedding directly; Lumina 2's goes through a SiLU.
    modulation = getattr(model.layers[0], "adaLN_modulation", None)
    return getattr(model, "pad_tokens_multiple", None) is not None or (
        modulation is not None and not isinstance(modulation[0], torch.nn.SiLU))


def _marks_its_blocks(cls) -> bool:
    """Whether this ComfyUI's NextDiT sets transformer_options["block_index"] and calls the post-block patches
    (feature detection on the installed code: the class is the same name on every version)."""
    import inspect

    try:
        source = inspect.getsource(cls._forward)
    except (AttributeError, OSError, TypeError):
        return False
    return '"block_index"' in source and '"double_block" in patches' in source


def _supported_elsewhere() -> str:
    from . import FAMILIES

    return "; ".join(f.supported for f in FAMILIES if f.supported and f.name != NAME)


FAMILY = Family(
    name=NAME,
    supported="Z-Image (Turbo, base), Lumina 2 / Neta (ComfyUI 0.12 and later; Token Spacing and Residual "
              "Alignment from block 1)",
    detect=detect,
    preview=(
        PreviewDepth("z_image", "Z-Image", 30, 0, (("z_image",), ("z-image",))),
        PreviewDepth("lumina2", "Lumina 2 / Neta", 26, 0, (("lumina_2",), ("lumina2",), ("neta",))),
    ),
    encoders=("qwen3_4b", "gemma2_2b"),     # Z-Image; Lumina 2 / Neta
    refuses=("Z-Image Omni", "Lumina 2 / Z-Image on ComfyUI without block marks (0.3.64)"),
)
