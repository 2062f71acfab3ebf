"""Token Spacing (TORA, reconstructed): scale the text tokens' spread along their principal directions.

For one sample's real tokens C (L x d) with mean mu and centred Cc = C - mu = U S V^T:
    C' = C + (sigma - 1) * Cc V_k V_k^T
multiplies the top-k centred singular values by sigma and leaves the mean and the residual space alone.
With k = all components this is the plain variance scale-up mu + sigma * (C - mu).

All statistics are computed in float32 whatever the model dtype; results come back in the input dtype.
"""
from dataclasses import dataclass

import torch

from .elbow import elbow_k

# A direction counts towards the numerical rank when its singular value exceeds RANK_RTOL * s_max. The
# float32 Gram path resolves singular values only down to about sqrt(L * eps32) * s_max (~4e-4 at
# L = 512), so below this a "direction" is rounding noise; the same cut is used on both paths so they
# agree on r. The energy dropped is at most 1e-3 of the largest component per direction.
RANK_RTOL = 1e-3
# Centred tokens whose spread is this small relative to the tokens themselves are rounding noise of the
# mean (e.g. identical tokens), not variance: such a sample has rank 0.
ZERO_VARIANCE_RTOL = 64 * torch.finfo(torch.float32).eps

MODES = ("auto", "fixed", "all")


@dataclass(frozen=True)
class TokenBasis:
    """Principal decomposition of one sample's tokens, in float32.

    mean: 1 x d. directions: d x r, orthonormal columns, by descending singular value.
    singular_values: r, descending. r is the numerical rank (see RANK_RTOL) and may be 0.
    """

    mean: torch.Tensor
    directions: torch.Tensor
    singular_values: torch.Tensor

    @property
    def rank(self) -> int:
        return int(self.singular_values.numel())


def principal_basis(tokens: torch.Tensor) -> TokenBasis:
    """Mean and principal directions of tokens (L x d), computed in float32."""
    if tokens.ndim != 2:
        raise ValueError(f"principal_basis expects tokens of shape [L, d], got {tuple(tokens.shape)}")
    x = tokens.detach().to(torch.float32)
    mean = x.mean(dim=0, keepdim=True)
    cc = x - mean
    floor = ZERO_VARIANCE_RTOL * torch.linalg.vector_norm(x).item()
    L, d = cc.shape
    if L < d:
        directions, s = _gram_directions(cc, floor)
    else:
        _, s, vh = torch.linalg.svd(cc, full_matrices=False)
        directions = vh.T
    keep = s > _rank_tolerance(s, floor)
    return TokenBasis(mean=mean, directions=directions[:, keep].contiguous(), singular_values=s[keep])


def _rank_tolerance(s: torch.Tensor, floor: float) -> float:
    s_max = s.max().item() if s.numel() else 0.0
    return max(RANK_RTOL * s_max, floor)


def _gram_directions(cc: torch.Tensor, floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Right singular vectors and values of cc (L x d, L < d) from its L x L Gram matrix.

    Cc Cc^T = U S^2 U^T, so Cc^T U = V S: the columns of Cc^T U are the directions scaled by the singular
    values. Their norms are the singular values (no square root of an eigenvalue that rounding made
    negative). The columns for small values come out far from orthogonal in float32, so the columns are re-orthonormalised by a QR in descending
    order, which keeps every leading span (and so the top directions) as it is.
    """
    _, u = torch.linalg.eigh(cc @ cc.T)
    scaled = cc.T @ u.flip(-1)
    s = torch.linalg.vector_norm(scaled, dim=0)
    s, order = torch.sort(s, descending=True)
    keep = s > _rank_tolerance(s, floor)
    q, rr = torch.linalg.qr(scaled[:, order[keep]])
    q = q * torch.where(torch.diagonal(rr) < 0, -1.0, 1.0)  # QR fixes signs arbitrarily; keep Cc^T u's
    return q, s[keep]


def resolve_k(basis: TokenBasis, mode: str, fixed_k: int) -> int:
    """How many principal directions to scale: auto (MDC elbow), fixed (capped at the rank) or all."""
    if mode == "auto":
        return elbow_k(basis.singular_values)
    if mode == "fixed":
        return max(0, min(int(fixed_k), basis.rank))
    if mode == "all":
        return basis.rank
    raise ValueError(f"unknown k mode {mode!r}; expected one of {MODES}")


def space_tokens(tokens: torch.Tensor, basis: TokenBasis, k: int, sigma: float) -> torch.Tensor:
    """C + (sigma - 1) * Cc V_k V_k^T for tokens (L x d); the input object itself when nothing changes."""
    k = min(int(k), basis.rank)
    if sigma == 1 or k <= 0:
        return tokens
    x = tokens.to(torch.float32)
    vk = basis.directions[:, :k]
    # The coefficients Cc V_k have zero column mean, so the added term leaves the mean alone.
    added = ((x - basis.mean) @ vk) @ vk.T
    return (x + (sigma - 1.0) * added).to(tokens.dtype)


def scale_variance(tokens: torch.Tensor, alpha: float) -> torch.Tensor:
    """mu + alpha * (C - mu) over the token axis (-2); the input object itself when alpha == 1."""
    if alpha == 1:
        return tokens
    x = tokens.to(torch.float32)
    mean = x.mean(dim=-2, keepdim=True)
    return (mean + alpha * (x - mean)).to(tokens.dtype)


def space_tokens_batch(
    tokens: torch.Tensor,
    real_mask: torch.Tensor | None,
    sigma: float,
    mode: str,
    fixed_k: int,
) -> tuple[torch.Tensor, list[int]]:
    """Token Spacing per sample of tokens (B x L x d), statistics from the real rows only.

    real_mask (B x L, True = real token; None = all real) selects the rows each sample's statistics come
    from and the only rows that change; padding rows come back bit-identical. Returns the new tensor (the
    input object itself when no sample changed) and the k applied per sample: 0 for a sample left as it
    is (sigma == 1, fewer than 2 real tokens, or rank 0). In mode "all" no decomposition is needed and k
    is reported as min(n_real - 1, d), the number of centred components.
    """
    if mode not in MODES:
        raise ValueError(f"unknown k mode {mode!r}; expected one of {MODES}")
    if tokens.ndim != 3:
        raise ValueError(f"expected tokens of shape [B, L, d], got {tuple(tokens.shape)}")
    batch, length, dim = tokens.shape
    if real_mask is not None and tuple(real_mask.shape) != (batch, length):
        raise ValueError(f"real_mask shape {tuple(real_mask.shape)} does not match tokens {(batch, length)}")
    ks = [0] * batch
    if sigma == 1:
        return tokens, ks
    out = None
    for b in range(batch):
        rows = _real_rows(real_mask, b, length, tokens.device)
        n_real = int(rows.numel())
        if n_real < 2:
            continue
        spaced, ks[b] = _space_one(tokens[b, rows], sigma, mode, fixed_k)
        if ks[b] == 0:
            continue
        if out is None:
            out = tokens.clone()
        out[b, rows] = spaced
    return (tokens if out is None else out), ks


def _real_rows(real_mask: torch.Tensor | None, b: int, length: int, device) -> torch.Tensor:
    if real_mask is None:
        return torch.arange(length, device=device)
    return torch.nonzero(real_mask[b].to(device=device, dtype=torch.bool)).reshape(-1)


def _space_one(rows: torch.Tensor, sigma: float, mode: str, fixed_k: int) -> tuple[torch.Tensor, int]:
    if mode == "all":
        return scale_variance(rows, sigma), min(rows.shape[0] - 1, rows.shape[1])
    basis = principal_basis(rows)
    k = resolve_k(basis, mode, fixed_k)
    return space_tokens(rows, basis, k, sigma), k
