"""HunyuanVideo 1.0 (comfy.ldm.hunyuan_video.model.HunyuanVideo), t2v and i2v.

Double-stream blocks with a joint call over [img; txt], then single-stream blocks over cat(img, txt).
ComfyUI crops the LLaMA text to the prompt, so every text row is prompt text. The same class builds
HunyuanVideo 1.5 (vision and ByT5 rows in the text stream) and HunyuanImage 2.1 (ByT5 rows appended inside
the model when the prompt quotes text): recognised and refused until a family module serves them.
"""
from __future__ import annotations

from ..runtime.adapters import FluxAdapter
from ..runtime.interventions import JOINT
from .base import GRID_LAST, AlignVidSetting, Family, ModelProfile, PreviewDepth, UnsupportedModelError

NAME = "HunyuanVideo"
PADDING = "real tokens: all text rows (ComfyUI crops HunyuanVideo's text to the prompt)"

# AlignVid's FramePack code (HunyuanVideo-based, not a ComfyUI core model) scales K, over all tokens, in
# its single-stream blocks, on these calibrated lists. They were calibrated on FramePack, not on
# HunyuanVideo: the preset says so and uses every single-stream block instead.
FRAMEPACK_F1_BLOCKS = "s0-7,s12-16,s18-20,s23,s25,s29,s32,s36-39"
FRAMEPACK_V1_BLOCKS = "s0,s2,s4-7,s10-21,s23,s25-27,s31,s33"

_FRAMEPACK_MODE = AlignVidSetting(
    source="the official AlignVid FramePack code's mode (K only, all tokens, single-stream blocks)",
    factors=((JOINT, 0, 1),),
    blocks="s0-39",
    blocks_note=("no calibration exists for HunyuanVideo (the published lists were calibrated on FramePack-F1 "
                 f"({FRAMEPACK_F1_BLOCKS}) and FramePack ({FRAMEPACK_V1_BLOCKS})): every single-stream block"),
)


def detect(model):
    import comfy.ldm.hunyuan_video.model as hunyuan

    if not isinstance(model, hunyuan.HunyuanVideo):
        return None
    if getattr(model, "vision_in_dim", None) is not None or getattr(model, "cond_type_embedding", None) is not None:
        raise UnsupportedModelError(
            "HunyuanVideo 1.5 is not supported yet: it shares ComfyUI's HunyuanVideo class, but its text stream "
            "starts with vision and ByT5 rows that are not prompt text. " f"Supported: {FAMILY.supported}.")
    if getattr(model, "byt5_in", None) is not None:
        raise UnsupportedModelError(
            "HunyuanImage 2.1 is not supported: it is built on ComfyUI's HunyuanVideo class and appends ByT5 rows to "
            "the text inside the model when the prompt quotes text, so the prompt's rows cannot be found from the "
            f"conditioning. Supported: {FAMILY.supported}.")
    singles = len(model.single_blocks)
    alignvid = _FRAMEPACK_MODE if singles == 40 else None
    profile = ModelProfile(
        family=NAME, variant="HunyuanVideo", encoder="llama", padding_note=PADDING, grid_layout=GRID_LAST,
        alignvid=alignvid,
        alignvid_missing="" if alignvid else f"AlignVid's FramePack mode is defined for 40 single-stream blocks; this model has {singles}",
    )
    return FluxAdapter(NAME, len(model.double_blocks), singles, frozenset({JOINT}), profile=profile, text_first=False)


FAMILY = Family(
    name=NAME,
    supported="HunyuanVideo 1.0 (t2v, i2v)",
    detect=detect,
    preview=(PreviewDepth("hunyuan_video", "HunyuanVideo", 20, 40,
                          (("hunyuan_video_t2v",), ("hunyuan_video_i2v",), ("hunyuan_video_image_to_video",))),),
    encoders=("llama",),
    refuses=("HunyuanVideo 1.5", "HunyuanImage 2.1"),
)
