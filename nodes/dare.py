"""Token Importance, Token Reweighting and Importance Guidance: DARE-inspired, inference-only."""
from __future__ import annotations

from comfy_api.latest import io

from ..core.importance import TokenWeights, parse_weight_spec
from ..core.region import as_frames
from ..runtime import table_folder
from ..runtime.inspector import patch_of
from ..runtime.install import add_intervention
from ..runtime.reweighting import (
    DEFAULT_SUPPRESS_THRESHOLD, ImportanceGuidanceCFG, TokenBias, importance_pass_name, suppressed_rows,
)
from .common import (
    CATEGORY, Target, block_and_step_inputs, check_widgets, finish, model_input, queue_verdict, report_output,
)

TokenWeightsType = io.Custom("TOKENFOCUS_WEIGHTS")

DARE = (
    "DARE-inspired, inference-only: DARE ('Not all tokens contribute equally to diffusion learning') is a "
    "training-time method whose formulas are not public; this is our inference-time adaptation of its ideas."
)


def check_weights_fit(weights: TokenWeights, target: Target) -> None:
    expected = target.adapter.encoder
    if weights.encoder != expected:
        raise ValueError(
            f"These token weights come from a '{weights.encoder}' text encoder, but {target.adapter.name} is "
            f"conditioned by '{expected}'. Build them from the CLIP that encodes this model's prompt."
        )


def _fitting(token_weights, target: Target):
    if token_weights is not None:
        check_weights_fit(token_weights, target)
    return token_weights


def _region(mask, target: Target):
    """(the mask as float32 frames, or None; the report's words for it)."""
    if mask is None:
        return None, ""
    region = as_frames(mask)
    video = target.adapter.name in ("Wan", "HunyuanVideo")
    if not video and region.shape[0] > 1:
        raise ValueError(f"Token Reweighting: {target.adapter.name} makes images; give a mask of one frame, not "
                         f"{region.shape[0]}.")
    frames = f"{region.shape[0]} frame(s)" if video else "one image"
    return region, f"; inside the mask only ({frames}, {float(region.mean()) * 100:.0f}% of the area)"


def _weights_text(token_weights) -> str:
    if token_weights is None:
        return "Weights: those each positive prompt carries in its conditioning (TokenFocus Prompt)."
    return token_weights.describe(max_rows=16)


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
                "punctuation low, rare content words high, by word frequency from the tokenizer's own vocabulary), "
                "and/or a saved table from ComfyUI's models/token_weights folder (Save Token Weights makes one). Feed "
                "them to Token Reweighting or Importance Guidance. It encodes the text once, as CLIP Text Encode does, "
                "so that weights meeting another prompt's conditioning are an error before sampling. " + DARE
            ),
            inputs=[
                io.Clip.Input("clip", tooltip="The CLIP / text encoder that encodes the positive prompt."),
                io.String.Input("text", multiline=True, default="", tooltip="The positive prompt, exactly as CLIP Text Encode encodes it (checked when sampling starts)."),
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
        from ..runtime.prompt_weights import encode_like_clip_text_encode, recognising
        from ..runtime.tokens import build_token_weights

        _check_importance_inputs(words, table)
        if clip is None:
            raise ValueError("Token Importance needs the CLIP that encodes the prompt.")
        saved = None if table in (None, "", table_folder.NONE) else table_folder.load_table(table)
        weights = build_token_weights(clip, text, named_spec=words, use_density=density, table=saved)
        # The text encoded as CLIP Text Encode does, so that weights meeting another prompt are an error.
        weights = recognising(weights, encode_like_clip_text_encode(clip, text))
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
                TokenWeightsType.Input(
                    "token_weights", optional=True,
                    tooltip="From Token Importance or TokenFocus Prompt, for the positive prompt. Unconnected: each "
                    "positive prompt encoded by TokenFocus Prompt brings its own weights in the conditioning.",
                ),
                io.Float.Input(
                    "strength", default=1.0, min=0.0, max=3.0, step=0.05, display_mode=io.NumberDisplay.slider,
                    tooltip="Exponent on the weights: 0 = off, 1 = A' proportional to w*A, 2 = w squared.",
                ),
                *block_and_step_inputs(blocks="all", start=0.0, end=1.0),
                io.Mask.Input(
                    "mask", optional=True,
                    tooltip="Optional region (MASK; one frame, or one per video frame): the weights act only for the "
                    "image/video tokens inside it, in proportion to the mask; outside, attention is unweighted.",
                ),
            ],
            outputs=[io.Model.Output(), report_output()],
        )

    @classmethod
    def validate_inputs(cls, strength=None, blocks=None, start_percent=None, end_percent=None):
        return queue_verdict(check_widgets, cls, strength=strength, blocks=blocks, start_percent=start_percent,
                             end_percent=end_percent)

    @classmethod
    def execute(cls, model, token_weights=None, strength=1.0, blocks="all", start_percent=0.0, end_percent=1.0,
                mask=None) -> io.NodeOutput:
        check_widgets(cls, strength=strength, blocks=blocks, start_percent=start_percent, end_percent=end_percent)
        target = Target(model, blocks, start_percent, end_percent)
        region, where = _region(mask, target)
        intervention = TokenBias(label="Token Reweighting", blocks=target.blocks, steps=target.steps,
                                 weights=_fitting(token_weights, target), encoder=target.adapter.encoder,
                                 strength=float(strength), region=region,
                                 patch=target.adapter.profile.patch or patch_of(model.get_model_object("diffusion_model")),
                                 profile=target.adapter.profile)
        neutral = strength == 0.0 or (token_weights is not None and not any(intervention.bias_for(token_weights)))
        neutral = neutral or (region is not None and not bool(region.any()))
        report = f"Token Reweighting strength {strength:g} on {target.where()}{where}.\n{_weights_text(token_weights)}"
        return finish(target, intervention, neutral, report)


class ImportanceGuidanceNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TokenFocus_ImportanceGuidance",
            display_name="Importance Guidance (DR-CFG-style)",
            category=CATEGORY,
            description=(
                "Guides away from the prediction where the important tokens (the top of the weights, see threshold) "
                "are suppressed: "
                "x = cfg + scale*(cond - cond_without_important_tokens). One extra model pass per step, only inside "
                "its step range. " + DARE
            ),
            inputs=[
                model_input(),
                TokenWeightsType.Input(
                    "token_weights", optional=True,
                    tooltip="From Token Importance or TokenFocus Prompt; the most heavily weighted tokens are the "
                    "important ones (see threshold). Unconnected: the weights each positive prompt encoded by "
                    "TokenFocus Prompt carries.",
                ),
                io.Float.Input(
                    "scale", default=1.0, min=0.0, max=10.0, step=0.1, display_mode=io.NumberDisplay.slider,
                    tooltip="lambda: 0 = off (plain CFG). Try 0.5-2.",
                ),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01, tooltip="Where the extra pass starts."),
                io.Float.Input("end_percent", default=0.5, min=0.0, max=1.0, step=0.01, tooltip="Where the extra pass stops (start = end: never)."),
                io.Float.Input(
                    "threshold", default=DEFAULT_SUPPRESS_THRESHOLD, min=0.0, max=1.0, step=0.05, optional=True,
                    tooltip="Which tokens count as important: those whose log-weight reaches this fraction of the "
                    "top token's. 0 = every token weighted above 1; 1 = only the top one(s). The report lists them.",
                ),
            ],
            outputs=[io.Model.Output(), report_output()],
        )

    @classmethod
    def validate_inputs(cls, scale=None, start_percent=None, end_percent=None, threshold=None):
        return queue_verdict(check_widgets, cls, scale=scale, start_percent=start_percent, end_percent=end_percent,
                             threshold=threshold)

    @classmethod
    def execute(cls, model, token_weights=None, scale=1.0, start_percent=0.0, end_percent=0.5,
                threshold=DEFAULT_SUPPRESS_THRESHOLD) -> io.NodeOutput:
        check_widgets(cls, scale=scale, start_percent=start_percent, end_percent=end_percent, threshold=threshold)
        target = Target(model, "all", start_percent, end_percent)
        header = f"Importance Guidance scale {scale:g}, extra pass on {target.where()}.\n"
        if token_weights is None:
            report = header + _weights_text(None) + f" Suppressed in each: the top of its weights (threshold {threshold:g})."
        else:
            check_weights_fit(token_weights, target)
            rows = suppressed_rows(token_weights.weights, float(threshold))
            if not rows:
                raise ValueError("Importance Guidance: no token is weighted above 1, so there is nothing to suppress.")
            report = header + (
                f"Suppressed in the extra pass: {len(rows)} of {sum(token_weights.real)} prompt tokens (threshold "
                f"{threshold:g}, weights {min(token_weights.weights[i] for i in rows):.2f} and up): "
                + " ".join(f"{token_weights.labels[i]}({token_weights.weights[i]:.2f})" for i in rows)
            )
        if scale == 0.0 or target.steps.empty:
            return finish(target, None, True, report)
        pass_name = importance_pass_name()
        intervention = TokenBias(
            label="Importance Guidance", blocks=target.blocks, steps=target.steps, extra_pass=pass_name,
            weights=_fitting(token_weights, target), encoder=target.adapter.encoder, suppress=True,
            threshold=float(threshold), profile=target.adapter.profile,
        )
        patched = add_intervention(model, target.adapter, intervention)
        patched.set_model_sampler_post_cfg_function(ImportanceGuidanceCFG(float(scale), target.steps, pass_name))
        return io.NodeOutput(patched, report)
