"""Attention temperature (AlignVid's Attention Scaling Modulation), as pure tensor math.

softmax((a·Q)(b·K)ᵀ/√d) = softmax(a·b · QKᵀ/√d): scaling Q, K or both is one inverse temperature a·b.
Everything here works on the [B, H, L, D] layout; the runtime converts views, never copies.
"""
from __future__ import annotations

import torch

SCALE_ON = ("query", "key", "both")


def qk_factors(gamma: float, scale_on: str) -> tuple[float, float]:
    """(query factor, key factor) for a γ applied to Q, to K, or to both (γ² in the logits)."""
    if scale_on == "query":
        return gamma, 1.0
    if scale_on == "key":
        return 1.0, gamma
    if scale_on == "both":
        return gamma, gamma
    raise ValueError(f"scale_on must be one of {SCALE_ON}, got {scale_on!r}")


def logit_spread(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Root-mean-square over queries of the standard deviation over keys of the logits q·k/√d, per (batch, head).

    Var_j(q·k_j) = qᵀ Cov(K) q, so the mean over queries is tr(Cov(K) · QᵀQ/Lq): two D×D moments per head,
    O(L·D²) work and no attention map. q, k: [B, H, L, D]. Returns float32 [B, H].
    """
    q32, k32 = q.float(), k.float()
    d = q.shape[-1]
    k_centred = k32 - k32.mean(dim=-2, keepdim=True)
    key_cov = k_centred.transpose(-1, -2) @ k_centred / k.shape[-2]
    query_moment = q32.transpose(-1, -2) @ q32 / q.shape[-2]
    variance = (key_cov * query_moment).sum(dim=(-1, -2)) / d
    return variance.clamp_min(0).sqrt()


def adaptive_gamma(gamma: float, spread: torch.Tensor) -> torch.Tensor:
    """Energy-based γ (our formula; the paper gives none): γ_eff = 1 + (γ − 1) · 2 / (1 + s).

    s is the logit spread in nats. Diffuse attention (small s) gets up to 1 + 2(γ − 1), s = 1 gets exactly γ,
    and already-sharp attention (large s) tends to 1. Monotone in s, and γ = 1 gives 1 everywhere.
    """
    return 1.0 + (gamma - 1.0) * 2.0 / (1.0 + spread)


def attention_entropy(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Mean attention entropy in nats (materialises the map: for tests and the inspector's samples only)."""
    logits = (q.float() @ k.float().transpose(-1, -2)) / q.shape[-1] ** 0.5
    log_p = torch.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(-1).mean()
