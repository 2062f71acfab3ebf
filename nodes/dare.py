"""Token Importance, Token Reweighting and Importance Guidance: DARE-inspired, inference-only."""
from __future__ import annotations

from comfy_api.latest import io

from ..core.importance import TokenWeights, parse_weight_spec
from ..runtime import table_folder
from ..runtime.install import add_intervention
from ..runtime.reweighting import ImportanceGuidanceCFG, IMPORTANCE_PASS, TokenBias, log_weights, suppression_bias
from .common import (
    CATEGORY, Target, block_and_step_inputs, check_widgets, finish, model_input, queue_verdict, report_output,
)

TokenWeightsType = io.Custom("TOKENFOCUS_WEIGHTS")

DARE = (
    "DARE-inspired, inference-only: DARE ('Not all tokens contribute equally to diffusion learning') is a "
    "training-time method whose formulas are not public; this is our inference-time adaptation of its ideas."
)
ENCODER_FOR_MODEL = {"Wan": "umt5xxl", "SD3 (MMDiT)": "sd3", "Flux": "t5xxl", "HunyuanVideo": "llama"}


def check_weights_fit(weights: TokenWeights, target: Target) -> None:
    expected = ENCODER_FOR_MODEL[target.adapter.name]
    if weights.encoder != expected:
        raise ValueError(
            f"These token weights come from a '{weights.encoder}' text encoder, but {target.adapter.name} is "
            f"conditioned by '{expected}'. Build them from the CLIP that encodes this model's prompt."
        )


class TokenImportanceNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TokenFocus_TokenImportance",
            display_name="Token Importance",
            category=CATEGORY,
            description=(
                "Per-token weights for the prompt, aligned with exactly the rows the CLIP produces for it: words or "
                "phrases you name with weights, an automatic semantic-density estimate (function words and "
                "punctuation low, rare content words high, from the tokenizer's own frequency ranks), and/or a "
                "saved table from ComfyUI's models/token_weights folder (Save Token Weights makes one). Feed them to "
                "Token Reweighting or Importance Guidance. " + DARE
            ),
            inputs=[
                io.Clip.Input("clip", tooltip="The CLIP / text encoder that encodes the positive prompt."),
                io.String.Input("text", multiline=True, default="", tooltip="The positive prompt, exactly as encoded."),
                io.String.Input(
                    "words", default="", multiline=False,
                    tooltip="Words or phrases with weights, e.g. 'sunflower:2, red hat:1.5' (no weight = 1.5). "
                    "Every occurrence is weighted; a word not in the prompt is an error.",
                ),
                io.Boolean.Input("density", default=False, tooltip="Multiply in the automatic semantic-density estimate."),
                io.Combo.Input(
                    "table", options=table_folder.table_names(), default=table_folder.NONE, optional=True,
                    tooltip="A weight table saved for this prompt (Save Token Weights), from ComfyUI's "
                    "models/token_weights folder; none = no table. Its weights multiply the others.",
                ),
            ],
            outputs=[TokenWeightsType.Output(display_name="token_weights"), io.String.Output(display_name="tokens", tooltip="The prompt's tokens and their weights.")],
        )

    @classmethod
    def validate_inputs(cls, words=None, table=None):
        return queue_verdict(_check_importance_inputs, words, table)

    @classmethod
    def execute(cls, clip, text, words, density, table=table_folder.NONE) -> io.NodeOutput:
        from ..runtime.tokens import build_token_weights

        _check_importance_inputs(words, table)
        if clip is None:
            raise ValueError("Token Importance needs the CLIP that encodes the prompt.")
        saved = None if table in (None, "", table_folder.NONE) else table_folder.load_table(table)
        weights = build_token_weights(clip, text, named_spec=words, use_density=density, table=saved)
        return io.NodeOutput(weights, weights.describe())


def _check_importance_inputs(words, table) -> None:
    """What needs no CLIP: the words' grammar and weights, and a table name that is in the folder (a stored
    workflow's old path must name one too: no other file is opened)."""
    if words is not None:
        parse_weight_spec(words)
    table_folder.check_table_name(table)


class TokenReweightNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TokenFocus_TokenReweight",
            display_name="Token Reweighting (DARE)",
            category=CATEGORY,
            description=(
                "Makes the important prompt tokens take more of the cross-attention: image/video queries attending to "
                "text keys get strength*log(w) added to the logit of each key (A' proportional to w*A). Joint attention: "
                "only the image-query to text-key part. Only the positive prompt is reweighted; Wan's CLIP image keys "
                "never. Folded into one extra head dimension, so fast attention kernels stay in use. " + DARE
            ),
            inputs=[
                model_input(),
                TokenWeightsType.Input("token_weights", tooltip="From Token Importance, for the positive prompt."),
                io.Float.Input(
                    "strength", default=1.0, min=0.0, max=3.0, step=0.05, display_mode=io.NumberDisplay.slider,
                    tooltip="Exponent on the weights: 0 = off, 1 = A' proportional to w*A, 2 = w squared.",
                ),
                *block_and_step_inputs(blocks="all", start=0.0, end=1.0),
            ],
            outputs=[io.Model.Output(), report_output()],
        )

    @classmethod
    def validate_inputs(cls, strength=None, blocks=None, start_percent=None, end_percent=None):
        return queue_verdict(check_widgets, cls, strength=strength, blocks=blocks, start_percent=start_percent,
                             end_percent=end_percent)

    @classmethod
    def execute(cls, model, token_weights, strength, blocks, start_percent, end_percent) -> io.NodeOutput:
        check_widgets(cls, strength=strength, blocks=blocks, start_percent=start_percent, end_percent=end_percent)
        target = Target(model, blocks, start_percent, end_percent)
        check_weights_fit(token_weights, target)
        bias = log_weights(token_weights.weights, float(strength))
        intervention = TokenBias(label="Token Reweighting", blocks=target.blocks, steps=target.steps, bias=bias, encoder=token_weights.encoder)
        neutral = strength == 0.0 or all(b == 0.0 for b in bias)
        report = f"Token Reweighting strength {strength:g} on {target.where()}.\n{token_weights.describe(max_rows=16)}"
        return finish(target, intervention, neutral, report)


class ImportanceGuidanceNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TokenFocus_ImportanceGuidance",
            display_name="Importance Guidance (DR-CFG-style)",
            category=CATEGORY,
            description=(
                "Guides away from the prediction where the important tokens (weight above 1) are suppressed: "
                "x = cfg + scale*(cond - cond_without_important_tokens). One extra model pass per step, only inside "
                "its step range. " + DARE
            ),
            inputs=[
                model_input(),
                TokenWeightsType.Input("token_weights", tooltip="From Token Importance; tokens weighted above 1 are the important ones."),
                io.Float.Input(
                    "scale", default=1.0, min=0.0, max=10.0, step=0.1, display_mode=io.NumberDisplay.slider,
                    tooltip="lambda: 0 = off (plain CFG). Try 0.5-2.",
                ),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01, tooltip="Where the extra pass starts."),
                io.Float.Input("end_percent", default=0.5, min=0.0, max=1.0, step=0.01, tooltip="Where the extra pass stops (start = end: never)."),
            ],
            outputs=[io.Model.Output(), report_output()],
        )

    @classmethod
    def validate_inputs(cls, scale=None, start_percent=None, end_percent=None):
        return queue_verdict(check_widgets, cls, scale=scale, start_percent=start_percent, end_percent=end_percent)

    @classmethod
    def execute(cls, model, token_weights, scale, start_percent, end_percent) -> io.NodeOutput:
        check_widgets(cls, scale=scale, start_percent=start_percent, end_percent=end_percent)
        target = Target(model, "all", start_percent, end_percent)
        check_weights_fit(token_weights, target)
        bias = suppression_bias(token_weights.weights)
        report = f"Importance Guidance scale {scale:g}, extra pass on {target.where()}."
        if not any(bias):
            raise ValueError("Importance Guidance: no token is weighted above 1, so there is nothing to suppress.")
        if scale == 0.0 or target.steps.empty:
            return finish(target, None, True, report)
        intervention = TokenBias(
            label="Importance Guidance", blocks=target.blocks, steps=target.steps, extra_pass=IMPORTANCE_PASS,
            bias=bias, encoder=token_weights.encoder,
        )
        patched = add_intervention(model, target.adapter, intervention)
        patched.set_model_sampler_post_cfg_function(ImportanceGuidanceCFG(float(scale), target.steps))
        return io.NodeOutput(patched, report)
