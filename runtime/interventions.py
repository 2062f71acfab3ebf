"""Interventions: frozen, deep-copyable descriptions of what a node asked for.

A node builds one, the runtime stores it on the model clone and applies it at the right blocks and steps.
Each kind implements the hooks it needs (`edit_attention`, `edit_block_inputs`), and only those.
"""
from __future__ import annotations

from dataclasses import dataclass, field


from ..core.schedule import StepRange
from ..core.temperature import adaptive_gamma, logit_spread

SELF, CROSS_TEXT, CROSS_IMAGE, JOINT = "self", "cross_text", "cross_image", "joint"
ATTENTION_KIND_NAMES = {
    SELF: "self-attention of the image/video tokens",
    CROSS_TEXT: "cross-attention to the text",
    CROSS_IMAGE: "cross-attention to the i2v image (CLIP) tokens",
    JOINT: "joint text+image attention",
}


@dataclass(frozen=True)
class Intervention:
    label: str
    blocks: frozenset
    steps: StepRange
    extra_pass: str = ""     # non-empty: active only in the extra model pass of that name (guidance)

    def check_prompt(self, positive_rows: int) -> None:
        """Raise before sampling starts if the positive prompt does not fit this intervention."""

    def start_run(self, positive: list, run, latent_shape: tuple = ()) -> None:
        """Once per sampling run, before the first step, with the guider's positive conds (dicts with
        'cross_attn' and the 'uuid' each model call names its chunks by) and the latent's shape: raise if
        they do not fit."""

    @property
    def reference_prompt(self):
        """(context, {model input: tensor}) of a prompt to run as an uncond pass when the run has none
        (CFG 1), or None."""
        return None

    @property
    def needs_uncond_text(self) -> bool:
        """Does it read the uncond prompt's text (a reference pass runs where a model call brings none)?"""
        return False

    def prepare_step(self, plan, device) -> None:
        """Once per model call, outside any compiled region: build what the hooks will only look up
        (a cache filled inside a compiled graph would change its guards and force recompiles)."""

    def edit_attention(self, call) -> None:
        """Change q/k (or add a key bias) of one attention call. Default: nothing."""

    def edit_block_inputs(self, args: dict, ctx) -> dict:
        """Change the inputs of one block (e.g. its text tokens). Default: unchanged."""
        return args

    @property
    def acts_on_attention(self) -> bool:
        return type(self).edit_attention is not Intervention.edit_attention

    @property
    def acts_on_block_inputs(self) -> bool:
        return type(self).edit_block_inputs is not Intervention.edit_block_inputs


@dataclass(frozen=True)
class AttentionTemperature(Intervention):
    """Multiply Q and/or K by a factor in the chosen attention kinds (AlignVid's ASM)."""

    factors: dict = field(default_factory=dict)   # attention kind -> (query factor, key factor)
    adaptive: bool = False

    def edit_attention(self, call) -> None:
        factors = self.factors.get(call.kind)
        if factors is None:
            return
        q_factor, k_factor = factors
        if self.adaptive:
            # The energy-based mode puts the whole (adapted) factor on Q, per sample and head.
            spread = logit_spread(call.query_heads(), call.key_heads())
            call.scale_query(adaptive_gamma(q_factor * k_factor, spread))
            return
        if q_factor != 1.0:
            call.scale_query(q_factor)
        if k_factor != 1.0:
            call.scale_key(k_factor)


def temperature_is_neutral(factors: dict) -> bool:
    return all(q == 1.0 and k == 1.0 for q, k in factors.values())
