"""HunyuanVideo 1.0 (comfy.ldm.hunyuan_video.model.HunyuanVideo), t2v and i2v.

Double-stream blocks with a joint call over [img; txt], then single-stream blocks over cat(img, txt).
ComfyUI crops the LLaMA text to the prompt, so every text row is prompt text. The same class builds
HunyuanVideo 1.5 (the model puts SigLIP vision rows and ByT5 rows in front of the Qwen2.5-VL rows) and
HunyuanImage 2.1 (ByT5 rows appended after them when the prompt quotes text), told apart by their parameters
(vision_in, cond_type_embedding, byt5_in). The extra rows are found from the call's own conds (clip_fea,
txt_byt5): they are left out of statistics and weights, and the prompt's rows are found exactly.
"""
from __future__ import annotations

from ..runtime.adapters import AFTER, BEFORE, FluxAdapter
from ..runtime.interventions import JOINT
from .base import GRID_LAST, AlignVidSetting, Family, ModelProfile, PreviewDepth

NAME = "HunyuanVideo"
PADDING = "real tokens: all text rows (ComfyUI crops HunyuanVideo's text to the prompt)"
PADDING_15 = ("real tokens: the Qwen2.5-VL rows of the conditioning (less those its attention mask marks as "
              "padding); the vision rows and ByT5 rows the model puts in front of them are not prompt text and "
              "stay untouched")
PADDING_IMAGE21 = ("real tokens: the Qwen2.5-VL rows of the conditioning (less those its attention mask marks as "
                   "padding); the ByT5 rows the model appends for quoted text are not prompt text and stay untouched")

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
    doubles, singles = len(model.double_blocks), len(model.single_blocks)
    byt5 = getattr(model, "byt5_in", None) is not None
    if getattr(model, "vision_in", None) is not None or getattr(model, "cond_type_embedding", None) is not None:
        # HunyuanVideo 1.5: [vision rows][ByT5 rows][LLM rows] (model.py: "byt5 first for HunyuanVideo1.5").
        extra = (("clip_fea", BEFORE),) * (getattr(model, "vision_in", None) is not None) + (("txt_byt5", BEFORE),) * byt5
        return _adapter(doubles, singles, "HunyuanVideo 1.5", PADDING_15, extra)
    if byt5:
        # HunyuanImage 2.1: [LLM rows][ByT5 rows], the ByT5 rows there only when the prompt quotes text.
        return _adapter(doubles, singles, "HunyuanImage 2.1", PADDING_IMAGE21, (("txt_byt5", AFTER),))
    alignvid = _FRAMEPACK_MODE if singles == 40 else None
    profile = ModelProfile(
        family=NAME, variant="HunyuanVideo", encoder="llama", padding_note=PADDING, grid_layout=GRID_LAST,
        alignvid=alignvid,
        alignvid_missing="" if alignvid else f"AlignVid's FramePack mode is defined for 40 single-stream blocks; this model has {singles}",
    )
    return FluxAdapter(NAME, doubles, singles, frozenset({JOINT}), profile=profile, text_first=False)


def _adapter(doubles, singles, variant, padding, extra):
    profile = ModelProfile(family=NAME, variant=variant, encoder="qwen25_7b_byt5", padding_note=padding,
                           grid_layout=GRID_LAST, alignvid_missing=f"AlignVid's code publishes no setting for {variant}")
    return FluxAdapter(NAME, doubles, singles, frozenset({JOINT}), profile=profile, text_first=False,
                       extra_text_rows=extra)


FAMILY = Family(
    name=NAME,
    supported="HunyuanVideo 1.0 (t2v, i2v), HunyuanVideo 1.5 and HunyuanImage 2.1",
    detect=detect,
    preview=(PreviewDepth("hunyuan_video", "HunyuanVideo", 20, 40,
                          (("hunyuan_video_t2v",), ("hunyuan_video_i2v",), ("hunyuan_video_image_to_video",))),
             PreviewDepth("hunyuan_video_15", "HunyuanVideo 1.5", 54, 0, (("hunyuanvideo1.5",), ("hunyuan_video_1.5",))),
             PreviewDepth("hunyuan_image_21", "HunyuanImage 2.1", 20, 40, (("hunyuanimage2.1",), ("hunyuan_image_2.1",)))),
    encoders=("llama", "qwen25_7b_byt5"),     # 1.0; 1.5 and HunyuanImage 2.1
)
