"""Givens rotations in a plane of R^d, and Residual Alignment (TORA, reconstructed).

Residual Alignment rotates the residual space of one sample's tokens (the orthogonal complement of the top-k
principal directions V_k) so that its most significant direction r1 = v_{k+1} turns towards the semantic
direction s_R (the residual part of mu_cond - mu_uncond), by the Givens rotation in the plane span(r1, s_R).
Like Token Spacing it works on a whole batch with static shapes and no host reads (see spacing.py).
"""
import torch

from .spacing import TINY, Spectrum, real_rows_mask

# Below this, the residual part of the semantic vector (relative to the whole vector) or the sine of the
# angle between r1 and s_R is float32 rounding noise: there is nothing to align.
ALIGN_TOL = 1e-6


def givens_rotate(x: torch.Tensor, u: torch.Tensor, w: torch.Tensor, theta) -> torch.Tensor:
    """Rotate x (..., d) by theta in the plane span(u, w), taking u towards w; identity off the plane.

    u and w must be orthonormal: (d,), or (B, d) for x of shape (B, L, d), one plane per sample. theta is
    a number or a tensor broadcastable to x.shape[:-1]. Computed in float32 (or x's dtype if wider),
    returned in x's dtype; no d x d matrix is formed.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(dtype)
    return (xf + _plane_delta(xf, u.to(xf), w.to(xf), theta)).to(x.dtype)


def _plane_delta(x: torch.Tensor, u: torch.Tensor, w: torch.Tensor, theta) -> torch.Tensor:
    """G x - x for the plane rotation G: (cos - 1)(a u + b w) + sin (a w - b u), a = x.u, b = x.w."""
    theta = torch.as_tensor(theta, dtype=x.dtype, device=x.device)
    cos, sin = torch.cos(theta), torch.sin(theta)
    if theta.ndim > 0:
        cos, sin = cos.unsqueeze(-1), sin.unsqueeze(-1)
    a, b = _along(x, u), _along(x, w)
    u, w = _as_row(u), _as_row(w)
    return (cos - 1.0) * (a * u + b * w) + sin * (a * w - b * u)


def _along(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """x . u with a trailing axis of 1: x (..., d) with u (d,), or x (B, L, d) with u (B, d)."""
    if u.ndim == 1:
        return (x @ u).unsqueeze(-1)
    return x @ u.unsqueeze(-1)


def _as_row(u: torch.Tensor) -> torch.Tensor:
    return u if u.ndim == 1 else u.unsqueeze(-2)


def align_residual(
    tokens: torch.Tensor,
    real: torch.Tensor | None,
    spectrum: Spectrum,
    k: torch.Tensor,
    semantic: torch.Tensor,
    strength: float,
) -> torch.Tensor:
    """Turn the residual space of each sample of tokens ([B, L, d]) towards its semantic direction
    (semantic: [B, d]), by strength in [0, 1]; spectrum is decompose(tokens, real), k its [B] counts.

    The rotation acts on the centred tokens; because both plane vectors lie in the residual space, this is
    the same as rotating only each token's residual component: the mean and the principal component
    (along V_k) are untouched, and the centred tokens keep their norms. With strength 1, r1 is carried
    exactly onto s_R. A sample with nothing to align (no residual direction, k >= rank; a semantic vector
    with no residual part, or one already parallel to r1) and every row outside `real` come back
    bit-identical. Strength 0 returns the input object itself.
    """
    if strength == 0:
        return tokens
    r1, w, angle = _alignment_plane(spectrum, k, semantic)
    delta = _plane_delta(spectrum.centred, r1, w, (strength * angle).unsqueeze(-1))
    changes = real_rows_mask(tokens, real) & (angle != 0).unsqueeze(-1)
    aligned = (tokens.to(torch.float32) + delta).to(tokens.dtype)
    return torch.where(changes.unsqueeze(-1), aligned, tokens)


def _alignment_plane(spectrum: Spectrum, k: torch.Tensor, semantic: torch.Tensor):
    """Per sample: r1 = v_{k+1} signed towards s_R, w the unit completion of s_R in the plane, and the
    angle between them; angle 0 (and zero vectors) where there is nothing to align."""
    s = semantic.to(torch.float32)
    s_res = s - spectrum.project(s, k)
    s_norm, res_norm = torch.linalg.vector_norm(s, dim=-1), torch.linalg.vector_norm(s_res, dim=-1)
    s_r = s_res / res_norm.clamp_min(TINY).unsqueeze(-1)
    # Cc^T u / s leaves a sliver of V_k in r1 in float32 for the smaller singular values: remove it.
    r1 = spectrum.direction(k)
    r1 = r1 - spectrum.project(r1, k)
    r1_norm = torch.linalg.vector_norm(r1, dim=-1)
    r1 = r1 / r1_norm.clamp_min(TINY).unsqueeze(-1)
    cos = (r1 * s_r).sum(dim=-1)
    # A principal direction's sign is arbitrary: turn the nearer end towards s_R.
    r1 = r1 * torch.where(cos < 0, -1.0, 1.0).unsqueeze(-1)
    cos = cos.abs()
    w = s_r - cos.unsqueeze(-1) * r1
    sin = torch.linalg.vector_norm(w, dim=-1)
    possible = (k < spectrum.rank) & (r1_norm > 0) & (res_norm > ALIGN_TOL * s_norm) & (res_norm > 0) & (sin > ALIGN_TOL)
    w = torch.where(possible.unsqueeze(-1), w / sin.clamp_min(TINY).unsqueeze(-1), 0.0)
    angle = torch.where(possible, torch.atan2(sin, cos), 0.0)
    return r1, w, angle
