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

from ..core.attention_stats import token_grid
from ..core.region import token_weights_of_mask
from .adapters import AFTER
from .interventions import CROSS_TEXT, JOINT, Intervention
from .prompt_rows import place_prompts
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
    """A logit bias on the positive prompts' text keys, from weights connected to the node (`weights`) or,
    when none are, from the weights each positive cond carries (TokenFocus Prompt), one bias per prompt."""

    weights: object = None       # TokenWeights connected to the node, or None: read from the conditioning
    encoder: str = ""            # the text encoder this model is conditioned by
    strength: float = 1.0
    suppress: bool = False       # Importance Guidance: remove the important tokens instead of adding log w
    threshold: float = DEFAULT_SUPPRESS_THRESHOLD   # which tokens are important when suppressing (suppressed_rows)
    # Regional weights: a MASK as float32 [frames, H, W]; the bias then acts on each image/video query in
    # proportion to the mask over it (the query side of the fold carries it), and not at all outside.
    region: object = None
    patch: tuple = (1, 2, 2)     # the model's patch size, to lay the mask on its token grid
    # The model's ModelProfile: where rows that are not the prompt's can sit in its conditioning (prompt_rows).
    profile: object = None

    def bias_for(self, weights) -> tuple:
        if self.suppress:
            return suppression_bias(weights.weights, self.threshold)
        return log_weights(weights.weights, self.strength)

    def check_prompt(self, positive_rows: int) -> None:
        """Replaced by start_run, which sees each positive cond, not only its row count."""

    def start_run(self, positive: list, run, latent_shape: tuple = ()) -> None:
        """Find each positive cond's bias (by the uuid ComfyUI gave it); anything that does not fit is an
        error here, before the first step."""
        if self.region is not None and len(latent_shape) in (4, 5):
            self._region_on(token_grid(latent_shape, self.patch), run, "cpu")    # a mask that cannot fit fails here
        by_uuid = {}
        for cond, _context, weights, place in place_prompts(positive, self.weights, self.profile, self.label, run):
            if weights is None:
                continue
            self._check_encoder(weights)
            if not place.note and place.rows.stop < place.total and getattr(self.profile, "added_rows", "") != AFTER:
                # A family whose conditioning carries rows after the prompt's (a style model's) expects them;
                # elsewhere they can only be a prompt ConditioningConcat appended.
                run.warn_once(f"{self.label}-appended-{place.rows.stop}", (
                    f"{self.label}: rows {place.rows.stop} to {place.total - 1} of a positive prompt come after the rows "
                    "its weights were made for (ConditioningConcat keeps only the first prompt's weights): left "
                    "unweighted. To weight words of two prompts, write them in one TokenFocus Prompt, or use "
                    "ConditioningCombine"))
            # Rows that are not the prompt's (a style model's image rows, Qwen-Image-Edit's vision rows) get no bias.
            by_uuid[cond.get("uuid")] = place.spread(self.bias_for(weights), 0.0)
        if self.weights is None and not by_uuid:
            raise ValueError(
                f"{self.label}: no token weights. Encode the positive prompt with TokenFocus Prompt (its weights "
                "come with the conditioning), or connect token_weights.")
        # A prompt whose weights are all 1 gets no bias at all, so its attention stays bit-identical.
        by_uuid = {uuid: bias for uuid, bias in by_uuid.items() if any(bias)}
        if not by_uuid:
            if self.suppress:
                raise ValueError(f"{self.label}: no token of the positive prompt is weighted above 1, so there is "
                                 "nothing to suppress.")
            run.warn_once(f"{self.label}-neutral", f"{self.label}: every token weight of the positive prompt is 1: "
                          "nothing is reweighted")
        run.cache[self._by_uuid_key] = by_uuid

    def _check_encoder(self, weights) -> None:
        if weights.encoder != self.encoder:
            raise ValueError(
                f"{self.label}: the token weights come from a '{weights.encoder}' text encoder, but this model "
                f"is conditioned by '{self.encoder}'. Encode the prompt with the CLIP that goes with this model.")

    def prepare_step(self, plan, device) -> None:
        """The bias tensor of each sample of this model call (None: unweighted), built outside the model."""
        by_uuid = plan.run.cache.get(self._by_uuid_key, {})
        tensors = plan.run.cache.setdefault(self._tensors_key, {})
        batch = plan.latent_shape[0] if plan.latent_shape else 0
        chunks = plan.uuids if plan.uuids and batch % len(plan.uuids) == 0 else ()
        per_sample = []
        for b, is_uncond in enumerate(plan.uncond_samples(batch)):
            if chunks:
                key = chunks[b * len(chunks) // batch]
            elif not is_uncond and len(set(by_uuid.values())) == 1:
                key = next(iter(by_uuid))      # a call that names no chunks: the one positive prompt
            else:
                key = None
            bias = by_uuid.get(plan.run.cache.get(_private_of(key), key))
            if bias is None:
                per_sample.append(None)
                continue
            cached = tensors.get(key)
            if cached is None or cached.device != device:
                tensors[key] = cached = torch.tensor(bias, dtype=torch.float32, device=device)
            per_sample.append(cached)
        plan.scratch[self._tensors_key] = per_sample
        if self.region is not None:
            grid = token_grid(plan.latent_shape, self.patch)
            plan.scratch[self._region_key] = None if grid is None else self._region_on(grid, plan.run, device)

    def _region_on(self, grid: tuple, run, device) -> torch.Tensor:
        """The mask as one weight per image token of this grid, made once per run and device."""
        key = (self._region_key, grid, str(device))
        cached = run.cache.get(key)
        if cached is None:
            cached = run.cache[key] = token_weights_of_mask(self.region, grid).to(device)
        return cached

    def edit_attention(self, call) -> None:
        ctx = call.ctx
        batch, _, seq_q, _ = call.query_heads().shape
        device = call.q.device          # the query mask is built there: no host-to-device copy per call
        if call.kind == CROSS_TEXT:
            keys = call.key_heads().shape[2]
            key_slice, queries = slice(0, keys), torch.ones(seq_q, dtype=torch.bool, device=device)
            image = slice(0, seq_q)
        elif call.kind == JOINT and ctx.text_len is not None:
            keys = ctx.text_len
            key_slice = ctx.adapter.text_span(ctx.block, ctx.text_len, seq_q)
            queries = torch.ones(seq_q, dtype=torch.bool, device=device)
            queries[key_slice] = False          # text queries keep their attention as it is
            image = slice(key_slice.stop, seq_q) if key_slice.start == 0 else slice(0, key_slice.start)
        else:
            return
        if self.region is not None:
            queries = self._regional_queries(ctx, seq_q, image, device)
            if queries is None:
                return
        # Plain Python choices (which samples get which bias): no data-dependent branch under torch.compile.
        per_sample = ctx.plan.scratch.get(self._tensors_key) or []
        groups = {}
        for b, bias in enumerate(per_sample[:batch]):
            if bias is not None:
                groups.setdefault(id(bias), (bias, []))[1].append(b)
        for bias, samples in groups.values():
            rows = ctx.adapter.conditioning_keys(keys, bias.shape[0], ctx.plan.inputs)
            if rows is None:
                ctx.plan.warn_once(f"{self.label}-rows-{keys}", (
                    f"{self.label}: {keys} text keys where the weights have {bias.shape[0]} rows (a batch padded "
                    "to a common length?); left unweighted there"))
                continue
            # Text keys outside the conditioning's rows (padding or rows the model adds itself) keep a zero bias.
            rows = slice(key_slice.start + rows.start, key_slice.start + rows.stop)
            call.key_bias().add(rows, bias, samples, queries)

    def _regional_queries(self, ctx, seq_q: int, image: slice, device):
        """Per query: the mask's weight over its image token; 0 for text queries."""
        region = ctx.plan.scratch.get(self._region_key)
        count = image.stop - image.start
        if region is None or region.shape[0] != count:
            ctx.plan.warn_once(f"{self.label}-region-{count}", (
                f"{self.label}: {count} image queries where the mask covers "
                f"{None if region is None else region.shape[0]} tokens (reference latents, another layout?); "
                "left unweighted there"))
            return None
        queries = torch.zeros(seq_q, dtype=torch.float32, device=device)
        queries[image] = region
        return queries

    @property
    def _region_key(self):
        return (id(self), "region")

    @property
    def _by_uuid_key(self):
        return (id(self), "bias by cond")

    @property
    def _tensors_key(self):
        return (id(self), "bias tensors")


def _private_of(cond_uuid):
    """Run-cache key: the cond that a private extra-pass uuid stands for (ImportanceGuidanceCFG._private)."""
    return ("private pass of", cond_uuid)


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
                run.cache[_private_of(own)] = c.get("uuid")   # its weights are the cond's own (TokenBias)
            private.append({**c, "uuid": own})
        return private
