"""Givens rotations in a plane of R^d, and Residual Alignment (TORA, reconstructed).

Residual Alignment rotates the residual space of one sample's tokens (the orthogonal complement of the top-k
principal directions V_k) so that its most significant direction r1 = v_{k+1} turns towards the semantic
direction s_R (the residual part of mu_cond - mu_uncond), by the Givens rotation in the plane span(r1, s_R).
"""
import math

import torch

from .spacing import TokenBasis

# Below this, the residual part of the semantic vector (relative to the whole vector) or the sine of the
# angle between r1 and s_R is float32 rounding noise: there is nothing to align.
ALIGN_TOL = 1e-6


def givens_rotate(x: torch.Tensor, u: torch.Tensor, w: torch.Tensor, theta) -> torch.Tensor:
    """Rotate x (..., d) by theta in the plane span(u, w), taking u towards w; identity off the plane.

    u and w must be orthonormal. theta is a number or a tensor broadcastable to x.shape[:-1]. Computed in
    float32 (or x's dtype if wider), returned in x's dtype; no d x d matrix is formed.
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
    a = (x @ u).unsqueeze(-1)
    b = (x @ w).unsqueeze(-1)
    return (cos - 1.0) * (a * u + b * w) + sin * (a * w - b * u)


def align_residual(
    tokens: torch.Tensor, basis: TokenBasis, k: int, semantic: torch.Tensor, strength: float
) -> torch.Tensor:
    """Turn the residual space of tokens (L x d) towards the semantic direction, by strength in [0, 1].

    The rotation acts on the centred tokens; because both plane vectors lie in the residual space, this is
    the same as rotating only each token's residual component: the mean and the principal component
    (along V_k) are untouched, and the centred tokens keep their norms. With strength 1, r1 is carried
    exactly onto s_R. Returns the input object itself when there is nothing to do: strength 0, no residual
    direction (k >= rank), a semantic vector with no residual part, or one already parallel to r1.
    """
    if strength == 0:
        return tokens
    plane = _alignment_plane(basis, max(int(k), 0), semantic.to(basis.mean))
    if plane is None:
        return tokens
    r1, w, angle = plane
    x = tokens.to(torch.float32)
    delta = _plane_delta(x - basis.mean, r1, w, strength * angle)
    return (x + delta).to(tokens.dtype)


def _alignment_plane(basis: TokenBasis, k: int, semantic: torch.Tensor):
    """(r1, w, angle): r1 = v_{k+1} signed towards s_R, w the unit completion of s_R in the plane."""
    if k >= basis.rank:
        return None
    s = semantic.reshape(-1)
    leading = basis.leading(k + 1)
    vk = leading[:, :k]
    s_res = s - vk @ (vk.T @ s)
    s_norm = torch.linalg.vector_norm(s).item()
    res_norm = torch.linalg.vector_norm(s_res).item()
    if res_norm <= ALIGN_TOL * s_norm or res_norm == 0:
        return None
    s_r = s_res / res_norm
    r1 = leading[:, k]
    cos = torch.dot(r1, s_r).item()
    if cos < 0:  # a principal direction's sign is arbitrary: turn the nearer end towards s_R
        r1, cos = -r1, -cos
    w = s_r - cos * r1
    sin = torch.linalg.vector_norm(w).item()
    if sin <= ALIGN_TOL:
        return None
    return r1, w / sin, math.atan2(sin, cos)
