"""LTX-2 (comfy.ldm.lightricks.av_model.LTXAVModel: audio-video), on ComfyUI 0.12 and later.

48 blocks, each carrying a video and an audio stream: the video's self-attention and its cross-attention to
the video text context, then the audio's self-attention and its cross-attention to the audio text context,
then audio->video and video->audio cross-attention. TokenFocus acts on the video stream and its text only;
the audio calls and the audio text are left as they are.

The conditioning is Gemma 3's prompt rows passed through the text encoder's connectors, which append learnable
register rows up to 1024 (video and audio contexts side by side in the width); the model projects the video
half once, the same in every block and step. No attention mask comes with it, so the rows past the prompt
cannot be told from the prompt's own for statistics; token weights cover the prompt's rows, which come first.
"""
from __future__ import annotations

from ..runtime.adapters import AudioVideoAdapter
from ..runtime.interventions import CROSS_TEXT, SELF
from .base import Family, ModelProfile, PreviewDepth

NAME = "LTX-2"
PADDING = ("real tokens: every row of the video text context (the prompt's rows and the register rows the text "
           "connector appends after them up to 1024; the conditioning does not say where the prompt ends: connect "
           "token_weights from Token Importance to count the prompt's rows alone); the audio text is left untouched")


def detect(model):
    try:
        import comfy.ldm.lightricks.av_model as av
    except ImportError:
        return None
    if not isinstance(model, av.LTXAVModel):
        return None
    profile = ModelProfile(family=NAME, variant="LTX-2 (audio-video; the video stream)", encoder="gemma3_12b",
                           padding_note=PADDING, patch=(1, 1, 1),
                           alignvid_missing="AlignVid's code publishes no setting for LTX-2")
    return AudioVideoAdapter(NAME, len(model.transformer_blocks), 0, frozenset({SELF, CROSS_TEXT}), profile=profile)


FAMILY = Family(
    name=NAME,
    supported="LTX-2 (its video stream; ComfyUI 0.12 and later)",
    detect=detect,
    preview=(PreviewDepth("ltx2", "LTX-2", 48, 0, (("ltx-2",), ("ltx2",))),),
    encoders=("gemma3_12b",),
)
