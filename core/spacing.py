"""Token Spacing (TORA, reconstructed): scale the text tokens' spread along their principal directions.

For one sample's real tokens C (L x d) with mean mu and centred Cc = C - mu = U S V^T:
    C' = C + (sigma - 1) * Cc V_k V_k^T
multiplies the top-k centred singular values by sigma and leaves the mean and the residual space alone.
With k = all components this is the plain variance scale-up mu + sigma * (C - mu).

Every function works on a whole batch [B, L, d] at once and keeps static shapes: the real tokens are a
mask, never a selection of rows, and the rank and k are tensors, never host numbers. So the same code runs
eagerly and inside a torch.compile graph, with no graph break and nothing that depends on the data's values
for its shapes. Statistics are computed in float32 whatever the model dtype; results come back in the
input dtype, and rows that do not change come back bit-identical.
"""
from __future__ import annotations

import torch

from .elbow import elbow_counts

# A direction counts towards the numerical rank when its singular value exceeds RANK_RTOL * s_max. The
# float32 Gram matrix resolves singular values only down to about sqrt(L * eps32) * s_max (~4e-4 at
# L = 512), so below this a "direction" is rounding noise. The energy dropped is at most 1e-3 of the
# largest component per direction.
RANK_RTOL = 1e-3
# Centred tokens whose spread is this small relative to the tokens themselves are rounding noise of the
# mean (e.g. identical tokens), not variance: such a sample has rank 0.
ZERO_VARIANCE_RTOL = 64 * torch.finfo(torch.float32).eps
# Keeps divisions by a singular value or a norm finite where the value is zero; such entries are always
# masked out afterwards.
TINY = torch.finfo(torch.float32).tiny

MODES = ("auto", "fixed", "all")


def real_rows_mask(tokens: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
    """[B, L] bool on the tokens' device: the rows statistics come from (all rows where real is None)."""
    batch, length = tokens.shape[:2]
    if real is None:
        return torch.ones(batch, length, dtype=torch.bool, device=tokens.device)
    if tuple(real.shape) != (batch, length):
        raise ValueError(f"real-token mask shape {tuple(real.shape)} does not match tokens {(batch, length)}")
    return real.to(device=tokens.device, dtype=torch.bool)


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, d] float32 mean of each sample's rows where mask ([B, L] bool) is True; 0 for a sample with none."""
    x = torch.where(mask.unsqueeze(-1), tokens.to(torch.float32), 0.0)  # where, not a product: pads may be inf
    count = mask.sum(dim=-1, keepdim=True).clamp_min(1)
    return x.sum(dim=-2) / count


class Spectrum:
    """Principal decomposition of each sample's real tokens, in float32, from the L x L Gram matrix.

    centred: [B, L, d], real rows minus their mean, zero on the other rows. mean: [B, d].
    values: [B, L] singular values, descending, zero from the numerical rank on (see RANK_RTOL).
    rank: [B] long. left: [B, L, L] left singular vectors, columns in the order of `values`.
    spectrum: [B, L] every singular value of the real tokens, descending, none cut at the rank; its
    first `count` ([B] long: real tokens - 1, at most d) are the real tokens' own. The auto k reads these:
    a spectrum cut at the rank has lost the drop after the signal that marks the elbow.

    The text has fewer tokens than the model has dimensions (L < d), so the L x L Gram matrix is the small
    side. The right singular vectors are never formed: with V = Cc^T U S^-1, every quantity the edits need
    is a product with Cc and U (see `top_span`, `direction`, `project`).
    """

    def __init__(self, centred, mean, values, rank, left, spectrum=None, count=None):
        self.centred = centred
        self.mean = mean
        self.values = values
        self.rank = rank
        self.left = left
        self.spectrum = values if spectrum is None else spectrum
        self.count = rank if count is None else count

    def leading(self, k: torch.Tensor, width: int | None = None) -> torch.Tensor:
        """[B, width] bool: True for the first k[b] directions of each sample (all of them where width is None)."""
        width = self.values.shape[-1] if width is None else width
        return torch.arange(width, device=k.device) < k.unsqueeze(-1)

    def top_span(self, k: torch.Tensor) -> torch.Tensor:
        """[B, L, d] float32: Cc V_k V_k^T, the centred tokens' part along each sample's top k directions.

        Equal to U_k U_k^T Cc. Eagerly only the columns up to the largest k are multiplied; inside a
        compiled graph all L are, masked, because a width read from k would be a data-dependent shape.
        """
        width = self.values.shape[-1]
        if not torch.compiler.is_compiling():
            width = max(1, int(k.max()))
        u = self.left[..., :width] * self.leading(k, width).unsqueeze(-2)
        return u @ (u.mT @ self.centred)

    def direction(self, index: torch.Tensor) -> torch.Tensor:
        """[B, d] float32: the principal direction number index[b] (0-based) of each sample, v = Cc^T u / s;
        zero where the sample has no such direction (index >= rank)."""
        length = self.values.shape[-1]
        at = index.clamp(0, length - 1)
        u = self.left.gather(-1, at.view(-1, 1, 1).expand(-1, length, 1))      # [B, L, 1]
        s = self.values.gather(-1, at.view(-1, 1))                            # [B, 1]
        v = (self.centred.mT @ u).squeeze(-1) / s.clamp_min(TINY)
        return torch.where((index < self.rank).unsqueeze(-1), v, 0.0)

    def project(self, vectors: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """[B, d] float32: V_k V_k^T y for each sample's vector y ([B, d]): its part in the top-k span.

        V_k V_k^T = Cc^T U_k S_k^-2 U_k^T Cc, applied to one vector per sample: matrix-vector products only.
        """
        coefficients = self.left.mT @ (self.centred @ vectors.to(torch.float32).unsqueeze(-1))   # S V^T y
        # Divided by s twice rather than by s^2 once, which overflows float32 for small tokens.
        inverse = torch.where(self.leading(k), 1.0 / self.values.clamp_min(TINY), 0.0).unsqueeze(-1)
        back = self.left @ (coefficients * inverse * inverse)
        return (self.centred.mT @ back).squeeze(-1)


def on_real_rows(tokens: torch.Tensor, mask: torch.Tensor, edit) -> tuple[torch.Tensor, torch.Tensor]:
    """edit(tokens, mask) -> (edited tokens, k per sample), run on each sample's real rows only.

    Eagerly, the real rows are moved to the front and the batch is cut at its longest prompt, so the Gram
    matrix and its eigh shrink from the padded length (512 on Wan) to the prompt's. In a compiled graph that
    cut would be a data-dependent shape: edit then gets every row where it is, with the same result up to
    rounding. edit must return the rows outside the mask as they are.
    """
    if torch.compiler.is_compiling():
        return edit(tokens, mask)
    width = int(mask.sum(dim=-1).max())
    if width < 2:      # fewer than 2 real tokens in every sample: no spread to edit
        return tokens, torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
    if width == mask.shape[-1]:
        return edit(tokens, mask)
    order = torch.argsort((~mask).to(torch.uint8), dim=-1, stable=True)[:, :width]
    rows = order.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
    edited, k = edit(tokens.gather(1, rows), mask.gather(1, order))
    return tokens.scatter(1, rows, edited), k


def decompose(tokens: torch.Tensor, real: torch.Tensor | None = None) -> Spectrum:
    """The Spectrum of each sample's real rows of tokens ([B, L, d]); real: [B, L] bool or None (all)."""
    if tokens.ndim != 3:
        raise ValueError(f"expected tokens of shape [B, L, d], got {tuple(tokens.shape)}")
    mask = real_rows_mask(tokens, real)
    rows = mask.unsqueeze(-1)
    x = torch.where(rows, tokens.detach().to(torch.float32), 0.0)
    mean = masked_mean(x, mask)
    centred = torch.where(rows, x - mean.unsqueeze(-2), 0.0)
    floor = ZERO_VARIANCE_RTOL * torch.linalg.vector_norm(x, dim=(-2, -1))
    # Cc Cc^T = U S^2 U^T. Rounding can make tiny eigenvalues negative: clamped to 0, far below the rank cut.
    eigenvalues, vectors = torch.linalg.eigh(_separate_other_rows(centred @ centred.mT, mask))
    values, left = eigenvalues.flip(-1).clamp_min(0).sqrt(), vectors.flip(-1)
    tolerance = torch.maximum(RANK_RTOL * values[:, 0], floor)
    above = values > tolerance.unsqueeze(-1)
    # n centred real rows span at most n - 1 directions (and at most d): past that, values are the other
    # rows' zeros.
    count = (mask.sum(dim=-1) - 1).clamp(0, tokens.shape[-1])
    return Spectrum(centred, mean, torch.where(above, values, 0.0), above.sum(dim=-1), left, values, count)


def _separate_other_rows(gram: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The Gram matrix with a distinct negative diagonal on the rows outside the mask.

    Those rows and columns are zero, so each would add an eigenvalue 0: with many of them between real
    rows (SD3's CLIP padding sits between the CLIP and T5 tokens) float32 LAPACK eigh can fail to converge.
    The block is decoupled, so the values -(1 + i/L) * max diagonal are exact eigenvalues: distinct, below
    every real one (so they sort last and clamp to 0), and no larger than the real block's norm, which sets
    the rounding of the real eigenvalues.
    """
    length = gram.shape[-1]
    scale = gram.diagonal(dim1=-2, dim2=-1).amax(dim=-1).clamp_min(TINY)
    ramp = 1.0 + torch.arange(length, device=gram.device, dtype=gram.dtype) / length
    return gram + torch.diag_embed(torch.where(mask, 0.0, -ramp * scale.unsqueeze(-1)))


def choose_k(spectrum: Spectrum, mode: str, fixed_k: int) -> torch.Tensor:
    """[B] long: how many principal directions to scale, auto (MDC elbow), fixed (capped at the rank) or all."""
    if mode == "auto":
        # The elbow sees every real-token value, so a rank-r signal over a tail below the rank cut still
        # shows its drop at r; k never exceeds the rank (directions past it are rounding noise).
        count = torch.where(spectrum.rank > 0, spectrum.count, 0)
        return elbow_counts(spectrum.spectrum, count).minimum(spectrum.rank)
    if mode == "fixed":
        return spectrum.rank.clamp(max=max(0, int(fixed_k)))
    if mode == "all":
        return spectrum.rank
    raise ValueError(f"unknown k mode {mode!r}; expected one of {MODES}")


def space_tokens(
    tokens: torch.Tensor,
    real: torch.Tensor | None,
    sigma: float,
    mode: str,
    fixed_k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token Spacing per sample of tokens ([B, L, d]), statistics from the real rows only.

    real ([B, L] bool, True = real token; None = all real) marks the rows each sample's statistics come
    from and the only rows that change; every other row comes back bit-identical, as does a sample with
    k = 0 (fewer than 2 real tokens, or rank 0). Returns the new tokens (the input object itself when
    sigma == 1) and the k applied per sample ([B] long). Mode "all" needs no decomposition: it is the
    variance scale-up mu + sigma (C - mu), and k is reported as min(n_real - 1, d).
    """
    if mode not in MODES:
        raise ValueError(f"unknown k mode {mode!r}; expected one of {MODES}")
    if tokens.ndim != 3:
        raise ValueError(f"expected tokens of shape [B, L, d], got {tuple(tokens.shape)}")
    mask = real_rows_mask(tokens, real)
    if sigma == 1:
        return tokens, torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
    if mode == "all":
        x = tokens.to(torch.float32)
        n_real = mask.sum(dim=-1)
        k = torch.where(n_real >= 2, (n_real - 1).clamp(max=tokens.shape[-1]), 0)
        mean = masked_mean(x, mask).unsqueeze(-2)
        spaced = mean + sigma * (x - mean)
        changes = (mask & (k > 0).unsqueeze(-1)).unsqueeze(-1)
        return torch.where(changes, spaced.to(tokens.dtype), tokens), k

    def space(rows, rows_mask):
        spectrum = decompose(rows, rows_mask)
        k = choose_k(spectrum, mode, fixed_k)
        # The coefficients Cc V_k have zero mean over the real rows, so the added term leaves the mean alone.
        spaced = rows.to(torch.float32) + (sigma - 1.0) * spectrum.top_span(k)
        changes = (rows_mask & (k > 0).unsqueeze(-1)).unsqueeze(-1)
        return torch.where(changes, spaced.to(rows.dtype), rows), k

    return on_real_rows(tokens, mask, space)
