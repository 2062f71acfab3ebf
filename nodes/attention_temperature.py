"""Attention Temperature (AlignVid): sharpen attention by scaling Q and/or K in chosen blocks and steps."""
from __future__ import annotations

from comfy_api.latest import io

from ..core import presets
from ..core.blocklist import BlockListError
from ..core.schedule import sigma_window
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
    "only in the chosen blocks and part of the denoising. The paper reports better adherence to edits the "
    "prompt asks for (add, remove, change an object) in image-to-video models (OmitI2V semantic accuracy +3 to "
    "+8 points on Wan2.1 and FramePack): the paper's result, not measured by this pack. The adaptive mode is our "
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
                    tooltip="custom = the widgets above. 'AlignVid official code': what the authors' published code "
                    "does on this model (Wan2.1 i2v 14B: the paper's main setting, gamma on Q for the image branch and "
                    "on Q and K (gamma squared) for the text branch, its 28 calibrated blocks, sigma > 0.9, CFG 1.0; "
                    "40-block text-to-video Wan: text keys x gamma; HunyuanVideo: FramePack's mode, K on all tokens "
                    "in the single-stream blocks). 'Wan 2.2 high-noise expert only': text keys x gamma while the "
                    "high-noise expert runs. 'AlignVid window': only the steps of the paper's early / mid / late / "
                    "all windows, as sigma thresholds; the other widgets stay yours. A preset overrides the widgets it "
                    "sets; the report says which.",
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
        chosen = presets.canonical(preset)
        wanted = {SELF: self_attention, CROSS_TEXT: text_cross_attention, CROSS_IMAGE: image_cross_attention, JOINT: joint_attention}
        overrides = [f"'{preset}' is now called '{chosen}'"] if chosen != preset else []
        target = Target(model, blocks, start_percent, end_percent)
        if chosen == presets.OFFICIAL:
            target, factors, more = _official(model, target, gamma)
            overrides += more
        elif chosen == presets.WAN22_HIGH_NOISE:
            target, factors, more = _wan22_high_noise(model, target, gamma)
            overrides += more
        else:
            if chosen in presets.WINDOWS:
                window = presets.WINDOWS[chosen]
                target.steps = sigma_window(window.above, window.at_most, target.percent_to_sigma)
                overrides.append(f"steps: the paper's {chosen.split(': ')[1].split(' (')[0]} window, {window.describe()}")
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
            lines.append(f"preset '{chosen}' set: " + "; ".join(overrides))
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


def _official(model, target: Target, gamma: float):
    """The published code's own setting for this model (its family module says what that is)."""
    profile = target.adapter.profile
    setting = profile.alignvid
    if setting is None:
        raise BlockListError(
            f"No published AlignVid setting for this model: {profile.alignvid_missing}. Use 'custom' or one of the "
            "'AlignVid window' presets.")
    official = Target(model, setting.blocks, 0.0, 1.0)
    official.steps = sigma_window(presets.OFFICIAL_SIGMA_THRESHOLD, None, target.percent_to_sigma)
    factors = {kind: (gamma ** q_power, gamma ** k_power) for kind, q_power, k_power in setting.factors}
    overrides = [setting.source, f"blocks {setting.blocks}: {setting.blocks_note}",
                 f"sigma > {presets.OFFICIAL_SIGMA_THRESHOLD:g} (steps 0-{official.steps.end_percent:g})"]
    overrides += [_factor_words(kind, q, k) for kind, (q, k) in sorted(factors.items())]
    if CROSS_IMAGE not in factors and CROSS_TEXT in factors:
        overrides.append("no image branch on this model")
    if setting.cfg is not None:
        overrides.append(f"that code samples with CFG {setting.cfg:g}" + (f" and {setting.sampler}" if setting.sampler else "")
                         + " (set it on your sampler)")
    if profile.expert_boundary is not None:
        overrides.append(f"on Wan 2.2 A14B these steps are the high-noise expert's (it hands over at sigma "
                         f"{profile.expert_boundary:g}): the low-noise expert is left as it is")
    overrides += list(setting.notes)
    return official, factors, overrides


def _wan22_high_noise(model, target: Target, gamma: float):
    profile = target.adapter.profile
    if profile.expert_boundary is None:
        raise BlockListError(
            f"'{presets.WAN22_HIGH_NOISE}' is for Wan 2.2 A14B (40 blocks, text cross-attention only); this model is "
            f"{profile.variant} with {target.adapter.n_double} blocks.")
    acting = Target(model, "all", 0.0, 1.0)
    acting.steps = sigma_window(profile.expert_boundary, None, target.percent_to_sigma)
    factors = {CROSS_TEXT: (1.0, gamma)}
    overrides = [
        "the official code's text-to-video path: text keys x gamma, no image branch",
        "all blocks: no calibration exists for Wan 2.2 (the published list was calibrated on Wan2.1-I2V-14B)",
        f"sigma > {profile.expert_boundary:g}: the high-noise expert's steps only (steps 0-{acting.steps.end_percent:g}); "
        "on the low-noise expert it acts on no step",
    ]
    return acting, factors, overrides


def _factor_words(kind: str, q: float, k: float) -> str:
    both = f" (x{q * k:.4g} in the logits)" if q != 1.0 and k != 1.0 else ""
    return f"{ATTENTION_KIND_NAMES[kind]} Q x{q:g}, K x{k:g}{both}"
