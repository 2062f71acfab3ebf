"""Maximum-Distance-to-Chord (MDC) elbow of a singular-value spectrum.

The points (i, s_i), i = 1..r, are normalised to the unit square and joined by the chord from the first to
the last point; the bend of the curve is the point farthest from that chord (smallest index on ties).

The returned k counts the values on the high side of the bend, which is the point itself or the one before
it, depending on which side of the chord it lies:
- below the chord (a knee, where a steep drop turns flat) the farthest point is the first value of the
  flat tail, so k = its index - 1;
- above the chord (a shoulder, where a flat run turns into a drop) it is the last strong value, so
  k = its index.
On a rank-r spectrum plus small noise the farthest point is either s_r (shoulder) or s_{r+1} (knee), and
both give k = r. Returning the farthest index itself would give r + 1 whenever the knee wins.

Degenerate spectra: empty or all zero -> 0 (nothing to scale); one value -> 1; a linear or two-value
spectrum has no bend (every point lies on the chord) -> 1; a flat spectrum (all values equal within
FLAT_RTOL) -> r, because equal singular values make the individual directions arbitrary and only k = r
gives a result that does not depend on that choice.
"""
import math

import torch

# Distances are in units of the normalised unit square; float32 spectra carry ~1e-7 relative noise, so
# differences below this count as ties (and points this close to the chord count as on it).
TIE_TOL = 1e-6
# A spectrum whose spread (max - min) is at most this fraction of its largest value counts as flat.
FLAT_RTOL = 1e-4


def elbow_k(singular_values: torch.Tensor) -> int:
    """Number of leading singular values before the MDC elbow of one spectrum, in any order."""
    s = singular_values.detach().reshape(-1).to(torch.float32)
    if s.numel() == 0:
        return 0
    s = torch.sort(s, descending=True).values
    return int(elbow_counts(s[None], torch.tensor([s.numel()], device=s.device))[0])


def elbow_counts(values: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
    """[B] long: the elbow count of each row of values ([B, m], descending), over its first rank[b] values.

    Tensor operations only (no host reads, static shapes), so it also runs inside a torch.compile graph.
    """
    s = values.detach().to(_wide_dtype(values.device))
    r = rank.to(device=s.device, dtype=torch.long)
    index = torch.arange(s.shape[-1], device=s.device)
    top = s[:, 0]
    bottom = s.gather(-1, (r - 1).clamp_min(0).unsqueeze(-1)).squeeze(-1)
    spread = top - bottom
    # Normalised to the unit square, the chord runs from (0, 1) to (1, 0): the line x + y - 1 = 0.
    x = index / (r - 1).clamp_min(1).unsqueeze(-1)
    y = (s - bottom.unsqueeze(-1)) / torch.where(spread > 0, spread, 1.0).unsqueeze(-1)
    signed = (x + y - 1.0) / math.sqrt(2.0)          # positive above the chord, negative below
    dist = torch.where(index < r.unsqueeze(-1), signed.abs(), -1.0)
    farthest = dist >= dist.max(dim=-1, keepdim=True).values - TIE_TOL
    p = farthest.to(torch.uint8).argmax(dim=-1)       # the first (smallest) index on ties
    below = signed.gather(-1, p.unsqueeze(-1)).squeeze(-1) < -TIE_TOL
    k = torch.where(below, p, p + 1)
    k = torch.where(spread <= FLAT_RTOL * top, r, k)
    k = torch.where(r == 1, 1, k)
    return torch.where((r == 0) | (top <= 0), 0, k)


def _wide_dtype(device: torch.device) -> torch.dtype:
    # float64 keeps the tie tolerance far above rounding; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64
