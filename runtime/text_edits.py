"""TORA's text-token edits as interventions: Token Spacing and Residual Alignment (both reconstructed).

Both act at the input of a block, on the text tokens the adapter finds there, per sample and over the
prompt's real tokens only. Where the text is the same in every block and step (Wan), an edit is computed
once per sampling run and reused; elsewhere once per block call.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.rotation import align_residual
from ..core.spacing import principal_basis, resolve_k, space_tokens_batch
from .adapters import TextView
from .interventions import Intervention


def _real_rows(view, batch_index: int) -> torch.Tensor:
    if view.real is None:
        return torch.arange(view.tokens.shape[1], device=view.tokens.device)
    return torch.nonzero(view.real[batch_index].to(view.tokens.device)).reshape(-1)


# The decomposition has a data-dependent rank and k: under torch.compile it runs eagerly (one clean graph
# break per edited block) instead of being traced into many breaks and recompilations.
@torch.compiler.disable
def _reuse_or_compute(ctx, owner, view, compute):
    """Static text (Wan): one edit per run, found again by value. Elsewhere the text differs per block."""
    if not ctx.adapter.static_text:
        return compute()
    tokens = view.tokens
    cached = ctx.plan.run.cache.setdefault(id(owner), [])
    for i, (before, after) in enumerate(cached):
        # Identity first (the same context object in every block of a call), then value (a new step).
        if before is tokens:
            return after
        if before.shape == tokens.shape and before.device == tokens.device and torch.equal(before, tokens):
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

    # The positive prompt's real rows from Token Importance, for models whose padding ComfyUI does not
    # mark (SD3, Flux); empty = rely on the adapter.
    positive_real: tuple = ()

    def check_prompt(self, positive_rows: int) -> None:
        if self.positive_real and positive_rows != len(self.positive_real):
            raise ValueError(
                f"{self.label}: the token weights describe {len(self.positive_real)} rows but the positive "
                f"conditioning has {positive_rows}; build them from the same CLIP and prompt."
            )

    def edit_block_inputs(self, args, ctx):
        view = ctx.adapter.text_view(ctx.block, args, ctx)
        if view is None:
            ctx.plan.run.warn_once(f"{self.label}-{ctx.block}", f"{self.label}: no text tokens found in {ctx.block}; skipped there")
            return args
        view = self._with_positive_padding(view, ctx)
        edited = _reuse_or_compute(ctx, self, view, lambda: self.edit_tokens(view, ctx))
        return args if edited is None or edited is view.tokens else view.put(edited)

    def edit_tokens(self, view, ctx):
        """New text tokens, the same tensor for no change, or None for 'not possible yet'."""
        raise NotImplementedError

    def _with_positive_padding(self, view, ctx):
        """Mark the positive prompt's padding rows (cond samples) where the adapter could not."""
        batch, rows = view.tokens.shape[:2]
        if view.real is not None or len(self.positive_real) != rows:
            return view
        real = torch.ones(batch, rows, dtype=torch.bool, device=view.tokens.device)
        positive = torch.tensor(self.positive_real, dtype=torch.bool, device=view.tokens.device)
        for b, is_uncond in enumerate(ctx.plan.uncond_samples(batch)):
            if not is_uncond:
                real[b] = positive
        return TextView(view.tokens, real, view.put)


@dataclass(frozen=True)
class TokenSpacing(_TextEdit):
    sigma: float = 1.3
    k_mode: str = "auto"
    fixed_k: int = 8
    cond_only: bool = False

    def edit_tokens(self, view, ctx):
        real = view.real
        if self.cond_only:
            batch, rows = view.tokens.shape[:2]
            real = torch.ones(batch, rows, dtype=torch.bool, device=view.tokens.device) if real is None else real.clone()
            for b, is_uncond in enumerate(ctx.plan.uncond_samples(batch)):
                if is_uncond:
                    real[b] = False
        spaced, _ = space_tokens_batch(view.tokens, real, self.sigma, self.k_mode, self.fixed_k)
        return spaced


@dataclass(frozen=True)
class ResidualAlignment(_TextEdit):
    strength: float = 1.0
    k_mode: str = "auto"
    fixed_k: int = 8

    def edit_tokens(self, view, ctx):
        batch = view.tokens.shape[0]
        uncond = ctx.plan.uncond_samples(batch)
        means = [view.tokens[b, _real_rows(view, b)].float().mean(dim=0) for b in range(batch)]
        partner = self._uncond_partner(ctx, means, uncond)
        if partner is None:
            return None
        out = None
        for b in range(batch):
            if uncond[b]:
                continue
            rows = _real_rows(view, b)
            if rows.numel() < 2:
                continue
            tokens = view.tokens[b, rows]
            basis = principal_basis(tokens)
            k = resolve_k(basis, self.k_mode, self.fixed_k)
            aligned = align_residual(tokens, basis, k, means[b] - partner, self.strength)
            if aligned is tokens:
                continue
            if out is None:
                out = view.tokens.clone()
            out[b, rows] = aligned
        return view.tokens if out is None else out

    def _uncond_partner(self, ctx, means, uncond):
        """The uncond text mean at this block: from this batch, else the latest uncond pass of the run."""
        key = (id(self), "uncond-mean", ctx.block)
        run = ctx.plan.run
        if any(uncond):
            partner = means[uncond.index(True)]
            run.cache[key] = partner
            return partner
        if key in run.cache:
            run.warn_once(f"{self.label}-split", (
                f"{self.label}: cond and uncond ran in separate batches; aligning to the uncond text of the "
                "latest uncond pass at the same block (exact for Wan, one step old elsewhere)"))
            return run.cache[key]
        run.warn_once(f"{self.label}-nopartner", (
            f"{self.label}: no uncond pass to align to yet (CFG 1, guidance-distilled model, or cond ran first "
            "in a separate batch); skipped until one has run"))
        return None
