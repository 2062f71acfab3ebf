"""Token Spacing and Residual Alignment (TORA), reconstructed from the paper's description."""
from __future__ import annotations

from comfy_api.latest import io

from ..core.blocklist import DOUBLE
from ..core.spacing import MODES
from ..runtime.adapters import MARKED
from ..runtime.hooks import reference_from
from ..runtime.text_edits import ResidualAlignment, TokenSpacing
from .dare import TokenWeightsType, check_weights_fit
from .common import CATEGORY, Target, block_and_step_inputs, check_widgets, finish, model_input, queue_verdict, report_output

RECONSTRUCTED = (
    "Reconstructed from the paper's description (TORA, 'Rare Text Semantics Were Always There in Your "
    "Diffusion Transformer', NeurIPS 2025; no code was published)."
)
WEIGHTS_NOTE = ("real tokens of the positive prompt: from token_weights ({n} of {rows} rows; rows the conditioning has "
                "beyond the prompt's, such as a style model's image rows, are left out)")


def _token_weights_input():
    return TokenWeightsType.Input(
        "token_weights", optional=True,
        tooltip="Optional, from Token Importance: marks the positive prompt's real tokens exactly, so padding is "
        "left out of the statistics and untouched on SD3 and Flux (Wan and HunyuanVideo need no help), and so are "
        "rows that are not the prompt's: a style model's image rows (Flux Redux), Qwen-Image-Edit's vision rows.",
    )


def _reachable_inputs(target, blocks_text, label) -> str:
    """On a model that offers a patch only after each block, block 0's input is out of reach: `all` leaves it
    out (the report says so), a list naming it is an error. On a model where no block's text can be edited, the
    node refuses, saying why."""
    missing = target.adapter.profile.text_edits_missing
    if missing:
        raise ValueError(f"{label} cannot act on {target.adapter.profile.variant}: {missing}.")
    first = (DOUBLE, 0)
    if target.adapter.block_access != MARKED or first not in target.blocks:
        return ""
    note = target.adapter.profile.block_note
    if blocks_text.strip().lower() != "all":
        raise ValueError(f"{label}: block 0 cannot be edited on {target.adapter.profile.variant}: {note}. "
                         "Choose blocks from 1 on (or 'all').")
    target.blocks = target.blocks - {first}
    return f"\nBlock 0 left out: {note}."


def _padding(target, token_weights):
    if token_weights is None:
        return target.adapter.profile.padding_note
    check_weights_fit(token_weights, target)
    return WEIGHTS_NOTE.format(n=sum(token_weights.real), rows=len(token_weights))
K_TOOLTIP = (
    "How many principal directions count as 'semantic': auto = the elbow of the singular values (maximum "
    "distance to the chord), fixed = fixed_k, all = every direction (Token Spacing then is the plain variance "
    "scale-up mean + sigma*(z - mean))."
)


def _k_inputs(modes):
    return [
        io.Combo.Input("k_mode", options=list(modes), default="auto", tooltip=K_TOOLTIP),
        io.Int.Input("fixed_k", default=8, min=1, max=4096, tooltip="k when k_mode is fixed (capped at the tokens' rank)."),
    ]


class TokenSpacingNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TokenFocus_TokenSpacing",
            display_name="Token Spacing (TORA)",
            category=CATEGORY,
            description=(
                "At the input of every selected text-conditioning block, scales the spread of the prompt's text "
                "tokens along their top-k principal directions by sigma (mean and the other directions unchanged), "
                "once per block: on joint-attention models the edit is taken back out of the text the block hands "
                "on, so it never compounds. The TORA paper reports that this surfaces rare concepts on SD3 and Flux "
                "(RareBench, T2I-CompBench, GenEval): the paper's result, not measured by this pack. " + RECONSTRUCTED
            ),
            inputs=[
                model_input(),
                io.Float.Input(
                    "sigma", default=1.3, min=0.5, max=3.0, step=0.01, display_mode=io.NumberDisplay.slider,
                    tooltip="Spread factor along the top-k directions, applied once per block. 1.0 = off; the paper "
                    "uses 1.3 and reports that below 1 collapses semantics and above ~1.5 adds noise.",
                ),
                *_k_inputs(MODES),
                *block_and_step_inputs(blocks="all", start=0.0, end=1.0),
                io.Combo.Input(
                    "apply_to", options=["cond and uncond", "cond only"], default="cond and uncond",
                    tooltip="Space the negative prompt's tokens too (the paper's setting) or only the positive prompt's.",
                ),
                _token_weights_input(),
            ],
            outputs=[io.Model.Output(), report_output()],
        )

    @classmethod
    def validate_inputs(cls, sigma=None, k_mode=None, fixed_k=None, blocks=None, start_percent=None, end_percent=None,
                        apply_to=None):
        return queue_verdict(check_widgets, cls, sigma=sigma, k_mode=k_mode, fixed_k=fixed_k, blocks=blocks,
                             start_percent=start_percent, end_percent=end_percent, apply_to=apply_to)

    @classmethod
    def execute(cls, model, sigma, k_mode, fixed_k, blocks, start_percent, end_percent, apply_to="cond and uncond",
                token_weights=None) -> io.NodeOutput:
        check_widgets(cls, sigma=sigma, k_mode=k_mode, fixed_k=fixed_k, blocks=blocks, start_percent=start_percent,
                      end_percent=end_percent, apply_to=apply_to)
        target = Target(model, blocks, start_percent, end_percent)
        reach = _reachable_inputs(target, blocks, "Token Spacing")
        padding = _padding(target, token_weights)
        intervention = TokenSpacing(
            label="Token Spacing", blocks=target.blocks, steps=target.steps, sigma=float(sigma),
            k_mode=k_mode, fixed_k=int(fixed_k), cond_only=apply_to == "cond only", weights=token_weights,
            profile=target.adapter.profile,
        )
        k_text = {"auto": "k by the elbow", "fixed": f"k = {fixed_k}", "all": "all directions (variance scale-up)"}[k_mode]
        report = (
            f"Token Spacing sigma {sigma:g}, {k_text}, {apply_to}, on {target.where()}.\n{padding}.{reach}"
        )
        return finish(target, intervention, sigma == 1.0, report)


class ResidualAlignmentNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TokenFocus_ResidualAlignment",
            display_name="Residual Alignment (TORA)",
            category=CATEGORY,
            description=(
                "Rotates the residual (non-principal) part of the prompt's text tokens, with a Givens rotation, so "
                "that its main direction aligns with the semantic direction cond minus uncond at that block, once "
                "per block (never compounded on joint-attention models). Norms, the mean and the principal part are "
                "kept. The TORA paper reports that this keeps spaced tokens on the prompt's meaning (the paper's "
                "result, not measured by this pack). Needs "
                "an uncond pass (CFG > 1); without one it does nothing and says so in the log. " + RECONSTRUCTED
            ),
            inputs=[
                model_input(),
                io.Float.Input(
                    "strength", default=1.0, min=0.0, max=1.0, step=0.01, display_mode=io.NumberDisplay.slider,
                    tooltip="Fraction of the rotation: 0 = off, 1 = the residual's main direction fully aligned.",
                ),
                *_k_inputs(("auto", "fixed")),
                *block_and_step_inputs(blocks="all", start=0.0, end=1.0),
                _token_weights_input(),
                io.Conditioning.Input(
                    "negative", optional=True,
                    tooltip="Optional negative prompt for CFG 1 (distilled models): where the sampler runs no uncond "
                    "pass, the model runs once more per step on this prompt to give the cond - uncond direction.",
                ),
            ],
            outputs=[io.Model.Output(), report_output()],
        )

    @classmethod
    def validate_inputs(cls, strength=None, k_mode=None, fixed_k=None, blocks=None, start_percent=None, end_percent=None):
        return queue_verdict(check_widgets, cls, strength=strength, k_mode=k_mode, fixed_k=fixed_k, blocks=blocks,
                             start_percent=start_percent, end_percent=end_percent)

    @classmethod
    def execute(cls, model, strength, k_mode, fixed_k, blocks, start_percent, end_percent, token_weights=None,
                negative=None) -> io.NodeOutput:
        check_widgets(cls, strength=strength, k_mode=k_mode, fixed_k=fixed_k, blocks=blocks, start_percent=start_percent,
                      end_percent=end_percent)
        target = Target(model, blocks, start_percent, end_percent)
        reach = _reachable_inputs(target, blocks, "Residual Alignment")
        padding = _padding(target, token_weights)
        intervention = ResidualAlignment(
            label="Residual Alignment", blocks=target.blocks, steps=target.steps, strength=float(strength),
            k_mode=k_mode, fixed_k=int(fixed_k), weights=token_weights, profile=target.adapter.profile,
            negative=_reference(negative),
        )
        without_uncond = (
            "with no uncond pass (CFG 1) it runs the model once more per step on the negative input"
            if negative is not None else "with no uncond pass (CFG 1) it does nothing: connect negative")
        report = (
            f"Residual Alignment strength {strength:g}, k {'by the elbow' if k_mode == 'auto' else fixed_k}, on "
            f"{target.where()}.\n{padding}.\nAligns cond tokens to cond - uncond; {without_uncond}.{reach}"
        )
        return finish(target, intervention, strength == 0.0, report)


def _reference(negative):
    """The negative CONDITIONING as (context, {model input: tensor}): its pooled vector goes where the model
    takes one ('y': SD3, Flux, HunyuanVideo), and so does its text mask (HunyuanVideo)."""
    if not negative:
        return None
    context, extras = negative[0]
    if context is None:
        raise ValueError("Residual Alignment: the negative conditioning holds no text tokens.")
    return reference_from(context, extras)

