"""Token reweighting (DARE-inspired, inference-only): image queries give important prompt tokens more of
their attention, A'_pj ∝ w_j·A_pj, i.e. log w_j added to the logits of text key j. Only the positive
prompt's samples are reweighted, and in joint attention only the image-query -> text-key block changes.
Importance Guidance reuses the same bias to suppress the important tokens in one extra pass.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .interventions import CROSS_TEXT, JOINT, Intervention
from .state import PASS_KEY

# Suppression is a large finite bias: -inf would turn 0·(-inf) into NaN for the unbiased queries.
MIN_LOG_WEIGHT = -20.0
IMPORTANCE_PASS = "importance_low"


def log_weights(weights, strength: float) -> tuple:
    return tuple(max(MIN_LOG_WEIGHT, strength * math.log(w)) if w > 0 else MIN_LOG_WEIGHT for w in weights)


def suppression_bias(weights) -> tuple:
    """Remove the tokens weighted above 1 (the important ones) from the image queries' attention."""
    return tuple(MIN_LOG_WEIGHT if w > 1.0 else 0.0 for w in weights)


@dataclass(frozen=True)
class TokenBias(Intervention):
    bias: tuple = ()          # one logit bias per row of the positive prompt's context
    encoder: str = ""

    def check_prompt(self, positive_rows: int) -> None:
        if positive_rows != len(self.bias):
            raise ValueError(
                f"{self.label}: the token weights have {len(self.bias)} rows ({self.encoder} encoding of their "
                f"prompt) but the positive conditioning has {positive_rows}. Build the weights from the same "
                "CLIP and the same prompt text that encode the positive conditioning."
            )

    def edit_attention(self, call) -> None:
        ctx = call.ctx
        n = len(self.bias)
        batch, _, seq_q, _ = call.query_heads().shape
        device = call.q.device          # the query mask is built there: no host-to-device copy per call
        if call.kind == CROSS_TEXT:
            keys = call.key_heads().shape[2]
            key_slice, queries = slice(0, keys), torch.ones(seq_q, dtype=torch.bool, device=device)
        elif call.kind == JOINT and ctx.text_len is not None:
            keys = ctx.text_len
            key_slice = ctx.adapter.text_span(ctx.block, ctx.text_len, seq_q)
            queries = torch.ones(seq_q, dtype=torch.bool, device=device)
            queries[key_slice] = False          # text queries keep their attention as it is
        else:
            return
        rows = ctx.adapter.conditioning_keys(keys, n, ctx.plan.inputs)
        if rows is None:
            ctx.plan.warn_once(f"{self.label}-rows-{keys}", (
                f"{self.label}: {keys} text keys where the weights have {n} rows (a batch padded to a common "
                "length?); left unweighted there"))
            return
        # Text keys outside the conditioning's rows (padding or rows the model adds itself) keep a zero bias.
        key_slice = slice(key_slice.start + rows.start, key_slice.start + rows.stop)
        # Plain Python choices (which samples, skip or not): no data-dependent branch under torch.compile.
        samples = [b for b, is_uncond in enumerate(ctx.plan.uncond_samples(batch)) if not is_uncond]
        if not samples:
            return
        call.key_bias().add(key_slice, ctx.plan.run.cache[self._cache_key], samples, queries)

    @property
    def _cache_key(self):
        return (id(self), "bias")

    def prepare_step(self, plan, device) -> None:
        cached = plan.run.cache.get(self._cache_key)
        if cached is None or cached.device != device:
            plan.run.cache[self._cache_key] = torch.tensor(self.bias, dtype=torch.float32, device=device)


class ImportanceGuidanceCFG:
    """post-CFG function: denoised + scale·(cond − cond with important tokens suppressed), in its steps."""

    def __init__(self, scale: float, steps):
        self.scale = scale
        self.steps = steps

    def __call__(self, args):
        import comfy.samplers

        denoised = args["denoised"]
        sigma = float(args["sigma"].reshape(-1)[0])
        if not self.steps.contains(sigma) or args.get("cond") is None:
            return denoised
        options = dict(args["model_options"])
        options["transformer_options"] = dict(options.get("transformer_options", {}))
        options["transformer_options"][PASS_KEY] = IMPORTANCE_PASS
        (low,) = comfy.samplers.calc_cond_batch(args["model"], [args["cond"]], args["input"], args["sigma"], options)
        return denoised + self.scale * (args["cond_denoised"] - low)
