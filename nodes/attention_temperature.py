"""Attention Temperature (AlignVid): sharpen attention by scaling Q and/or K in chosen blocks and steps."""
from __future__ import annotations

from comfy_api.latest import io

from ..core import presets
from ..core.blocklist import BlockListError
from ..core.schedule import percent_for_sigma
from ..core.temperature import SCALE_ON, qk_factors
from ..runtime.interventions import (
    ATTENTION_KIND_NAMES,
    CROSS_IMAGE,
    CROSS_TEXT,
    JOINT,
    SELF,
    AttentionTemperature,
    temperature_is_neutral,
)
from .common import CATEGORY, Target, block_and_step_inputs, check_widgets, finish, model_input, queue_verdict, report_output

DESCRIPTION = (
    "AlignVid's Attention Scaling Modulation (training-free, code published by the authors): multiplies the "
    "attention queries and/or keys by gamma, an inverse temperature that makes attention more concentrated, "
    "only in the chosen blocks and part of the denoising. Improves adherence to edits the prompt asks for "
    "(add, remove, change an object) in image-to-video and text-to-video models. The adaptive mode is our "
    "own formula (the paper gives none): gamma grows where attention is diffuse."
)


class AttentionTemperatureNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TokenFocus_AttentionTemperature",
            display_name="Attention Temperature (AlignVid)",
            category=CATEGORY,
            description=DESCRIPTION,
            inputs=[
                model_input(),
                io.Float.Input(
                    "gamma", default=presets.PAPER_GAMMA, min=0.5, max=3.0, step=0.01,
                    display_mode=io.NumberDisplay.slider,
                    tooltip="The Q/K factor. 1.0 = off; the paper uses 1.35. Above ~1.6 images start to lose detail.",
                ),
                *block_and_step_inputs(blocks="all", start=0.0, end=0.3),
                io.Combo.Input(
                    "scale_on", options=list(SCALE_ON), default="query",
                    tooltip="Scale the queries, the keys, or both (both = gamma squared in the logits).",
                ),
                io.Boolean.Input("self_attention", default=False, tooltip="Scale the self-attention of the image/video tokens."),
                io.Boolean.Input("text_cross_attention", default=True, tooltip="Scale the cross-attention from image/video tokens to the text (Wan)."),
                io.Boolean.Input("image_cross_attention", default=True, tooltip="Scale the cross-attention to the CLIP image tokens (Wan 2.1 i2v)."),
                io.Boolean.Input("joint_attention", default=True, tooltip="Scale the joint text+image attention (SD3, Flux, HunyuanVideo)."),
                io.Boolean.Input(
                    "adaptive", default=False,
                    tooltip="Energy-based mode (our formula): per sample and head, gamma_eff = 1 + (gamma-1)*2/(1+s), "
                    "s = spread of the attention logits. Diffuse attention gets more, sharp attention less.",
                ),
                io.Combo.Input(
                    "preset", options=list(presets.PRESETS), default=presets.CUSTOM,
                    tooltip="custom = the widgets above. 'AlignVid paper': gamma 1.35 on Q, first 30% of the steps, "
                    "the paper's blocks where published. 'AlignVid official Wan2.1 i2v code': gamma on Q for the image "
                    "branch, gamma on Q and K (gamma squared) for the text branch, its 28-block list, sigma > 0.9; "
                    "that code also runs with CFG 1.0. A preset overrides the widgets it sets; the report says which.",
                ),
            ],
            outputs=[io.Model.Output(), report_output()],
        )

    @classmethod
    def validate_inputs(cls, gamma=None, blocks=None, start_percent=None, end_percent=None, scale_on=None, preset=None):
        return queue_verdict(check_widgets, cls, gamma=gamma, blocks=blocks, start_percent=start_percent,
                             end_percent=end_percent, scale_on=scale_on, preset=preset)

    @classmethod
    def execute(cls, model, gamma, blocks, start_percent, end_percent, scale_on="query", self_attention=False,
                text_cross_attention=True, image_cross_attention=True, joint_attention=True, adaptive=False,
                preset=presets.CUSTOM) -> io.NodeOutput:
        check_widgets(cls, gamma=gamma, blocks=blocks, start_percent=start_percent, end_percent=end_percent,
                      scale_on=scale_on, preset=preset)
        wanted = {SELF: self_attention, CROSS_TEXT: text_cross_attention, CROSS_IMAGE: image_cross_attention, JOINT: joint_attention}
        overrides = []
        target = Target(model, blocks, start_percent, end_percent)
        if preset == presets.OFFICIAL_WAN_I2V:
            target, factors, overrides = _official_wan_i2v(model, target, gamma)
        else:
            if preset == presets.PAPER:
                target, gamma, scale_on, overrides = _paper(model, target, blocks, gamma, scale_on)
            factors = {kind: qk_factors(gamma, scale_on) for kind, on in wanted.items() if on}
        factors = _keep_kinds_the_model_has(factors, target, wanted)

        intervention = AttentionTemperature(
            label="Attention Temperature", blocks=target.blocks, steps=target.steps, factors=factors, adaptive=adaptive
        )
        lines = [f"Attention Temperature on {target.where()}."]
        lines += [f"{ATTENTION_KIND_NAMES[k]}: Q x{q:g}, K x{kf:g}" for k, (q, kf) in sorted(factors.items())]
        if adaptive:
            lines.append("adaptive (energy-based, our formula): the factor grows where attention is diffuse.")
        if overrides:
            lines.append(f"preset '{preset}' set: " + "; ".join(overrides))
        return finish(target, intervention, temperature_is_neutral(factors), "\n".join(lines))


def _keep_kinds_the_model_has(factors: dict, target: Target, wanted: dict) -> dict:
    present = {kind: f for kind, f in factors.items() if kind in target.adapter.kinds}
    if factors and not present:
        have = ", ".join(ATTENTION_KIND_NAMES[k] for k in sorted(target.adapter.kinds))
        asked = ", ".join(ATTENTION_KIND_NAMES[k] for k in sorted(factors))
        raise ValueError(f"{target.adapter.name} has no {asked}; it has: {have}. Switch on one of those.")
    if not any(wanted.values()):
        raise ValueError("Switch on at least one attention kind (self, text cross, image cross or joint).")
    return present


def _paper(model, target: Target, blocks_text: str, gamma: float, scale_on: str):
    overrides = [f"gamma {presets.PAPER_GAMMA} on the queries", "steps 0-0.3"]
    calibrated = presets.calibrated_blocks(target.adapter.name, target.adapter.n_double, target.adapter.n_single)
    blocks = calibrated or blocks_text
    overrides.append(f"the paper's calibrated blocks {calibrated}" if calibrated else "no calibrated block list for this model: your blocks are kept")
    return Target(model, blocks, 0.0, 0.3), presets.PAPER_GAMMA, "query", overrides


def _official_wan_i2v(model, target: Target, gamma: float):
    adapter = target.adapter
    if adapter.name != "Wan" or adapter.n_double != 40:
        raise BlockListError(
            f"The official Wan2.1 i2v preset is defined for the 40-block Wan2.1 14B; this model is {adapter.name} "
            f"with {adapter.n_double} blocks. Use 'custom' or 'AlignVid paper'."
        )
    end = percent_for_sigma(presets.OFFICIAL_SIGMA_THRESHOLD, target.percent_to_sigma)
    official = Target(model, presets.WAN21_14B_BLOCKS, 0.0, end)
    factors = {CROSS_IMAGE: (gamma, 1.0), CROSS_TEXT: (gamma, gamma)}
    overrides = [
        f"image cross-attention Q x{gamma:g}", f"text cross-attention Q and K x{gamma:g} (x{gamma * gamma:.4g} in the logits)",
        f"blocks {presets.WAN21_14B_BLOCKS}", f"sigma > {presets.OFFICIAL_SIGMA_THRESHOLD} (steps 0-{end:g})",
        "self-attention off; the official code also sets CFG to 1.0 (set it on your sampler)",
    ]
    return official, factors, overrides
