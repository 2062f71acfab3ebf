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


# The float32 moments are taken a chunk of rows at a time: at most MAX_CHUNKS chunks, each at least
# CHUNK_FLOOR bytes, so the extra memory is one chunk, max(CHUNK_FLOOR, 1/MAX_CHUNKS of the tensor in
# float32), and a long video costs a few matmuls, not a full float32 copy of q and k.
MAX_CHUNKS = 8
CHUNK_FLOOR = 32 * 2 ** 20


def _chunk_rows(t: torch.Tensor) -> int:
    b, h, length, d = t.shape
    return max(1, -(-length // MAX_CHUNKS), CHUNK_FLOOR // max(1, 4 * b * h * d))


def _row_sum(t: torch.Tensor) -> torch.Tensor:
    """Σ over rows of t, float32, [B, H, D]."""
    step = _chunk_rows(t)
    return sum(t[:, :, i:i + step].sum(dim=-2, dtype=torch.float32) for i in range(0, t.shape[-2], step))


def _gram(t: torch.Tensor, centre: torch.Tensor | None = None) -> torch.Tensor:
    """Σ over rows of (t − centre)ᵀ(t − centre), float32, [B, H, D, D]; one float32 chunk at a time."""
    step = _chunk_rows(t)
    total = None
    for i in range(0, t.shape[-2], step):
        chunk = t[:, :, i:i + step].to(torch.float32, copy=True)
        if centre is not None:
            chunk.sub_(centre)
        part = chunk.transpose(-1, -2) @ chunk
        total = part if total is None else total.add_(part)
        del chunk
    return total


def logit_spread(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Root-mean-square over queries of the standard deviation over keys of the logits q·k/√d, per (batch, head).

    Var_j(q·k_j) = qᵀ Cov(K) q, so the mean over queries is tr(Cov(K) · QᵀQ/Lq): two D×D moments per head,
    O(L·D²) work and no attention map, accumulated in float32 a chunk of rows at a time (see MAX_CHUNKS).
    q, k: [B, H, L, D], any float dtype and layout. Returns float32 [B, H].
    """
    d = q.shape[-1]
    key_mean = (_row_sum(k) / k.shape[-2]).unsqueeze(-2)
    key_cov = _gram(k, key_mean) / k.shape[-2]
    query_moment = _gram(q) / q.shape[-2]
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
