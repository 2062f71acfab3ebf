"""TORA's text-token edits as interventions: Token Spacing and Residual Alignment (both reconstructed).

Both act at the input of a block, on the text tokens the adapter finds there, per sample and over the
prompt's real tokens only. Where the text is the same in every block and step (Wan), an edit is computed
once per sampling run and reused (under torch.compile once per model call); elsewhere once per block call.

Once per block, never compounded: where the text stream flows from block to block (SD3, Flux, HunyuanVideo
double and single blocks), the edit is what the block sees, and the same difference C' - C is subtracted
from the text the block hands on. The stream leaving the block then carries only the block's own update,
so the next selected block receives its text as the unpatched stream would carry it and edits it once
more, by the same factor. Left in the stream, the edit would compound to about sigma^n after n blocks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.rotation import align_residual
from ..core.spacing import choose_k, decompose, masked_mean, on_real_rows, real_rows_mask, space_tokens
from .adapters import TextView
from .interventions import Intervention
from .prompt_rows import place_prompts
from .state import NEGATIVE, NEGATIVE_CONDS_KEY, POSITIVE, UNCOND_THIS_STEP


def _reuse_or_compute(ctx, owner, view, compute):
    """Static text (Wan): one edit per run, found again by value. Elsewhere the text differs per block."""
    if not ctx.adapter.static_text:
        return compute()
    tokens = view.tokens
    # In a graph, comparing values would be a data-dependent branch and a cache that outlives the call
    # would change the guards: there, one edit per model call, found again by identity only (every block
    # of a call gets the same context object).
    compiling = torch.compiler.is_compiling()
    if compiling:
        cached = ctx.plan.scratch.setdefault(("text edit", id(owner)), [])
    else:
        cached = ctx.plan.run.cache.setdefault(id(owner), [])
    for i, (before, after) in enumerate(cached):
        # Identity first (the same context object in every block of a call), then value (a new step).
        if before is tokens:
            return after
        if not compiling and before.shape == tokens.shape and before.device == tokens.device and torch.equal(before, tokens):
            # Remember the new object: the call's other blocks then match by identity, so a step compares
            # values once (torch.equal waits for the GPU), not once per block.
            cached[i] = (tokens, after)
            return after
    result = compute()
    if result is not None:
        cached.append((tokens, result))
    return result


@dataclass(frozen=True)
class _TextEdit(Intervention):
    """Find the block's text tokens, edit them (once per run where they never change), hand them back."""

    # The positive prompt's token weights (Token Importance, TokenFocus Prompt), or None: those each positive
    # cond carries (TokenFocus Prompt), if any. They mark the prompt's real rows on models whose padding
    # ComfyUI does not mark (SD3, Flux), and how many rows are the prompt's where the conditioning carries
    # others (Flux Redux's image rows, Qwen-Image-Edit's vision rows): statistics and edits leave those out.
    weights: object = None
    profile: object = None      # the model's ModelProfile: where such rows sit (runtime/prompt_rows.py)

    def start_run(self, positive: list, run, latent_shape: tuple = ()) -> None:
        """Per row count of the positive conds: which rows are the prompt's real ones (an error here, before the
        first step, for connected weights that fit no positive prompt)."""
        masks, placed = {}, []
        for cond, context, weights, place in place_prompts(positive, self.weights, self.profile, self.label, run):
            rows = context.shape[1]
            if place is None:
                self._say_what_counts(cond, rows, run)
                continue
            masks[rows] = place.spread(weights.real, False)
            if place.rows != slice(0, rows):
                placed.append((context, place))
        run.cache[self._real_key] = {POSITIVE: masks, NEGATIVE: self._negative_rows(placed, run)}

    @staticmethod
    def _negative_rows(placed: list, run) -> dict:
        """Per row count of the negative conds: its rows that are bit for bit the positive's rows that are not
        the prompt's (the same input image's vision rows in front, the same style image's rows after), marked
        not real; a negative that shares none keeps every row."""
        masks = {}
        for cond in run.cache.get(NEGATIVE_CONDS_KEY) or []:
            context = cond.get("cross_attn")
            if context is None:
                continue
            rows = context.shape[1]
            for positive, place in placed:
                front, back = place.rows.start, place.total - place.rows.stop
                if front and rows > front and torch.equal(context[:, :front], positive[:, :front]):
                    masks[rows] = (False,) * front + (True,) * (rows - front)
                elif back and rows > back and torch.equal(context[:, rows - back:], positive[:, place.rows.stop:]):
                    masks[rows] = (True,) * (rows - back) + (False,) * back
        return masks

    def _say_what_counts(self, cond: dict, rows: int, run) -> None:
        """A conditioning that can carry rows other than the prompt's, with nothing to count them by."""
        if getattr(self.profile, "added_rows", "") and cond.get("reference_latents") is not None:
            run.warn_once(f"{self.label}-uncounted-{rows}", (
                f"{self.label}: the positive conditioning ({rows} rows) comes with reference latents, so its text "
                f"rows may hold {self.profile.added_rows_note}; without token weights they cannot be told from the "
                f"prompt's, and all {rows} rows count as text. Connect token_weights built from the same prompt "
                "to leave them out."))

    def prepare_step(self, plan, device) -> None:
        # The real-row masks (positive, negative) as tensors on the model's device, made outside the model.
        masks = plan.run.cache.get(self._real_key) or {}
        tensors = plan.run.cache.setdefault((self._real_key, str(device)), {})
        for role, by_rows in masks.items():
            for rows, mask in by_rows.items():
                if (role, rows) not in tensors:
                    tensors[(role, rows)] = torch.tensor(mask, dtype=torch.bool, device=device)
        plan.scratch[self._real_key] = tensors

    @property
    def _real_key(self):
        return (id(self), "positive real rows")

    def edit_block_inputs(self, args, ctx):
        view = ctx.adapter.text_view(ctx.block, args, ctx)
        if view is None:
            ctx.plan.warn_once(f"{self.label}-{ctx.block}", f"{self.label}: no text tokens found in {ctx.block}; skipped there")
            return args
        view = self._with_prompt_rows(view, ctx)
        edited = _reuse_or_compute(ctx, self, view, lambda: self.edit_tokens(view, ctx))
        if edited is None or edited is view.tokens:
            return args
        if view.take_back is not None:
            # Computed now: blocks such as Flux's update their text in place, edited included.
            delta = edited - view.tokens
            ctx.output_edits.append(lambda out: view.take_back(out, delta))
        return view.put(edited)

    def edit_tokens(self, view, ctx):
        """New text tokens, the same tensor for no change, or None for 'not possible yet'."""
        raise NotImplementedError

    def _with_prompt_rows(self, view, ctx):
        """Mark the prompts' real rows where the adapter could not: the positive prompt's padding, and the rows
        of either prompt that are not prompt text."""
        batch, rows = view.tokens.shape[:2]
        masks = ctx.plan.scratch.get(self._real_key) or {}
        positive, negative = masks.get((POSITIVE, rows)), masks.get((NEGATIVE, rows))
        if (positive is None and negative is None) or view.real is not None:
            return view
        real = torch.ones(batch, rows, dtype=torch.bool, device=view.tokens.device)
        for b, (is_uncond, is_negative) in enumerate(zip(ctx.plan.uncond_samples(batch), ctx.plan.negative_samples(batch))):
            mask = positive if not is_uncond else negative if is_negative else None
            if mask is not None:
                real[b] = mask
        return TextView(view.tokens, real, view.put, view.take_back)


@dataclass(frozen=True)
class TokenSpacing(_TextEdit):
    sigma: float = 1.3
    k_mode: str = "auto"
    fixed_k: int = 8
    cond_only: bool = False

    def edit_tokens(self, view, ctx):
        real = view.real
        if self.cond_only:
            batch = view.tokens.shape[0]
            real = real_rows_mask(view.tokens, real).clone()
            for b, is_uncond in enumerate(ctx.plan.uncond_samples(batch)):
                if is_uncond:
                    real[b] = False
        spaced, _ = space_tokens(view.tokens, real, self.sigma, self.k_mode, self.fixed_k)
        return spaced


@dataclass(frozen=True)
class ResidualAlignment(_TextEdit):
    strength: float = 1.0
    k_mode: str = "auto"
    fixed_k: int = 8
    # A negative prompt of the node's own, (context, {model input: tensor}), run as the uncond pass where
    # the sampler runs none (CFG 1): one extra model pass per step.
    negative: tuple = None

    @property
    def reference_prompt(self):
        return self.negative

    @property
    def needs_uncond_text(self) -> bool:
        return True

    def edit_tokens(self, view, ctx):
        tokens = view.tokens
        real = real_rows_mask(tokens, view.real)
        uncond = ctx.plan.uncond_samples(tokens.shape[0])
        partner = self._uncond_partner(ctx, tokens, real, ctx.plan.negative_samples(tokens.shape[0]))
        cond = [b for b, is_uncond in enumerate(uncond) if not is_uncond]
        if partner is None:
            return None
        if not cond:
            return tokens
        # Only the cond samples are decomposed and rotated; the uncond ones are the reference.
        rows = None if len(cond) == len(uncond) else torch.tensor(cond, device=tokens.device)
        part, part_real = (tokens, real) if rows is None else (tokens[rows], real[rows])

        def rotate(part_rows, part_rows_real):
            spectrum = decompose(part_rows, part_rows_real)
            k = choose_k(spectrum, self.k_mode, self.fixed_k)
            semantic = spectrum.mean - partner      # mu_cond - mu_uncond
            return align_residual(part_rows, part_rows_real, spectrum, k, semantic, self.strength), k

        aligned, _ = on_real_rows(part, part_real, rotate)
        return aligned if rows is None else tokens.index_copy(0, rows, aligned)

    def prepare_step(self, plan, device) -> None:
        super().prepare_step(plan, device)
        # One slot per block for the latest uncond text mean, made before the model runs: inside a compiled
        # graph, storing into an existing slot keeps the guards, adding a key to a dict would not.
        plan.run.cache.setdefault(self._means_key, dict.fromkeys(self.blocks))

    @property
    def _means_key(self):
        return (id(self), "uncond-means")

    def _uncond_partner(self, ctx, tokens, real, negative):
        """The uncond (negative prompt) text mean at this block: from this batch, else the latest uncond
        pass of the run."""
        latest = ctx.plan.run.cache[self._means_key]
        if any(negative):
            i = negative.index(True)
            partner = masked_mean(tokens[i:i + 1], real[i:i + 1])[0]
            latest[ctx.block] = partner     # for a cond pass that runs in a batch of its own
            return partner
        if latest.get(ctx.block) is not None:
            if ctx.plan.scratch.get(UNCOND_THIS_STEP):
                return latest[ctx.block]        # from an uncond batch or reference pass of this same step
            ctx.plan.warn_once(f"{self.label}-split", (
                f"{self.label}: cond ran before uncond in separate batches; aligning to the uncond text of the "
                "latest uncond pass at the same block (exact for Wan, one step old elsewhere)"))
            return latest[ctx.block]
        ctx.plan.note_reason(self.label, (
            "no uncond pass to align to (CFG 1, a guidance-distilled model, or cond ran first in a separate "
            "batch); skipped until one has run"))
        return None
