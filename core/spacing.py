"""Token Spacing (TORA, reconstructed): scale the text tokens' spread along their principal directions.

For one sample's real tokens C (L x d) with mean mu and centred Cc = C - mu = U S V^T:
    C' = C + (sigma - 1) * Cc V_k V_k^T
multiplies the top-k centred singular values by sigma and leaves the mean and the residual space alone.
With k = all components this is the plain variance scale-up mu + sigma * (C - mu).

All statistics are computed in float32 whatever the model dtype; results come back in the input dtype.
"""
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


class TokenBasis:
    """Principal decomposition of one sample's tokens, in float32.

    mean: 1 x d. singular_values: r, descending; r is the numerical rank (see RANK_RTOL) and may be 0.
    leading(m): d x m, the top m principal directions as orthonormal columns, by descending singular value.
    Callers need only the top k (or k + 1) of the r directions, so the Gram path orthonormalises just those,
    on first use: the QR of all r columns was half the cost of a decomposition.
    """

    def __init__(self, mean, singular_values, directions=None, centred=None, left_vectors=None):
        self.mean = mean
        self.singular_values = singular_values
        self._directions = directions          # orthonormal leading columns computed so far
        # Gram path: the centred tokens and their left singular vectors; directions follow from these.
        self._centred = centred
        self._left_vectors = left_vectors

    @property
    def rank(self) -> int:
        return int(self.singular_values.numel())

    def leading(self, m: int) -> torch.Tensor:
        m = max(0, min(int(m), self.rank))
        if m == 0:
            return self.mean.new_zeros(self.mean.shape[1], 0)
        known = 0 if self._directions is None else self._directions.shape[1]
        if known < m:
            self._directions = _orthonormal_columns(self._centred.T @ self._left_vectors[:, :m])
        return self._directions[:, :m]

    @property
    def directions(self) -> torch.Tensor:
        """All r directions (d x r)."""
        return self.leading(self.rank)


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
        s, u = _gram_spectrum(cc)
        keep = s > _rank_tolerance(s, floor)
        return TokenBasis(mean, s[keep], centred=cc, left_vectors=u[:, keep])
    _, s, vh = torch.linalg.svd(cc, full_matrices=False)
    keep = s > _rank_tolerance(s, floor)
    return TokenBasis(mean, s[keep], directions=vh.T[:, keep].contiguous())


def _rank_tolerance(s: torch.Tensor, floor: float) -> float:
    s_max = s.max().item() if s.numel() else 0.0
    return max(RANK_RTOL * s_max, floor)


def _gram_spectrum(cc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Singular values of cc (L x d, L < d), descending, and its left singular vectors, from the L x L Gram
    matrix Cc Cc^T = U S^2 U^T. Rounding can make tiny eigenvalues negative: they are clamped to 0, far
    below the rank cut. The right singular vectors follow as Cc^T U = V S (see TokenBasis.leading)."""
    eigenvalues, u = torch.linalg.eigh(cc @ cc.T)
    return eigenvalues.flip(-1).clamp_min(0).sqrt(), u.flip(-1)


def _orthonormal_columns(scaled: torch.Tensor) -> torch.Tensor:
    """Cc^T u comes out far from orthogonal in float32 for the small values: a QR in descending order
    re-orthonormalises the columns and keeps every leading span (so the top directions) as it is."""
    q, rr = torch.linalg.qr(scaled)
    return q * torch.where(torch.diagonal(rr) < 0, -1.0, 1.0)  # QR fixes signs arbitrarily; keep Cc^T u's


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
    vk = basis.leading(k)
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
