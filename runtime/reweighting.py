"""Token reweighting (DARE-inspired, inference-only): image queries give important prompt tokens more of
their attention, A'_pj ∝ w_j·A_pj, i.e. log w_j added to the logits of text key j. Only the positive
prompt's samples are reweighted, and in joint attention only the image-query -> text-key block changes.
Importance Guidance reuses the same bias to suppress the important tokens in one extra pass.
"""
from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

import torch

from .interventions import CROSS_TEXT, JOINT, Intervention
from .state import PASS_KEY, POSITIVE, RUN_KEY

# Suppression is a large finite bias: -inf would turn 0·(-inf) into NaN for the unbiased queries.
MIN_LOG_WEIGHT = -20.0
IMPORTANCE_PASS = "importance_low"


def log_weights(weights, strength: float) -> tuple:
    return tuple(max(MIN_LOG_WEIGHT, strength * math.log(w)) if w > 0 else MIN_LOG_WEIGHT for w in weights)


# Importance Guidance suppresses the tokens whose log-weight reaches this fraction of the top token's: the
# top of the importance distribution, not every token weighted above 1 (with density weights that is nearly
# every content word, and the extra pass becomes a second CFG push).
DEFAULT_SUPPRESS_THRESHOLD = 0.75


def suppressed_rows(weights, threshold: float = DEFAULT_SUPPRESS_THRESHOLD) -> list[int]:
    """Rows of the important tokens: weighted above 1 with log w >= threshold * the largest log w.
    threshold 0 = every token above 1; 1 = only the top weight (and its ties)."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
    logs = [math.log(w) if w > 1.0 else 0.0 for w in weights]
    top = max(logs, default=0.0)
    if top <= 0.0:
        return []
    cut = threshold * top * (1.0 - 1e-9)      # ties with the top (equal weights) stay in at threshold 1
    return [i for i, lw in enumerate(logs) if lw > 0.0 and lw >= cut]


def suppression_bias(weights, threshold: float = DEFAULT_SUPPRESS_THRESHOLD) -> tuple:
    """Remove the important tokens (suppressed_rows) from the image queries' attention."""
    rows = set(suppressed_rows(weights, threshold))
    return tuple(MIN_LOG_WEIGHT if i in rows else 0.0 for i in range(len(weights)))


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
        if keys != n:
            ctx.plan.warn_once(f"{self.label}-rows-{keys}", (
                f"{self.label}: {keys} text keys where the weights have {n} rows (a batch padded to a common "
                "length?); left unweighted there"))
            return
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


def importance_pass_name() -> str:
    """A pass name of its own for each Importance Guidance node: two such nodes on one model each run their
    extra pass with only their own suppression active, never the other's."""
    return f"{IMPORTANCE_PASS}:{uuid.uuid4().hex}"


class ImportanceGuidanceCFG:
    """post-CFG function: denoised + scale·(cond − cond with important tokens suppressed), in its steps."""

    def __init__(self, scale: float, steps, pass_name: str = IMPORTANCE_PASS):
        self.scale = scale
        self.steps = steps
        self.pass_name = pass_name

    def __call__(self, args):
        import comfy.samplers

        denoised = args["denoised"]
        sigma = float(args["sigma"].reshape(-1)[0])
        options = dict(args["model_options"])
        transformer_options = dict(options.get("transformer_options", {}))
        run = transformer_options.get(RUN_KEY)
        steps = run.steps_for(self.steps) if run is not None else self.steps
        if not steps.contains(sigma) or args.get("cond") is None:
            return denoised
        transformer_options[PASS_KEY] = self.pass_name
        options["transformer_options"] = transformer_options
        cond = self._private(args["cond"], run)
        (low,) = comfy.samplers.calc_cond_batch(args["model"], [cond], args["input"], args["sigma"], options)
        return denoised + self.scale * (args["cond_denoised"] - low)

    def _private(self, cond: list, run) -> list:
        """The positive conds under uuids of this pass's own: a pack that keys its state by cond uuid
        (EasyCache's cached cond output) sees a cond it does not know, never the cond pass. Stable over the
        run, so such a pack keeps one entry for it; known to the run as the positive prompt."""
        private = []
        for c in cond:
            key = ("private uuid", self.pass_name, c.get("uuid"))
            own = run.cache.setdefault(key, uuid.uuid4()) if run is not None else uuid.uuid4()
            if run is not None:
                run.roles[own] = POSITIVE
            private.append({**c, "uuid": own})
        return private
