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
    """Number of leading singular values before the MDC elbow (see the module docstring)."""
    s = singular_values.detach().reshape(-1).to("cpu", torch.float64)
    s = torch.sort(s, descending=True).values  # SVD order; sorting makes the index meaningful regardless
    r = s.numel()
    if r == 0 or s[0] <= 0:
        return 0
    if r == 1:
        return 1
    top, bottom = s[0].item(), s[-1].item()
    if top - bottom <= FLAT_RTOL * top:
        return r
    signed = _signed_chord_distance(s, top, bottom)
    dist = signed.abs()
    p = int(torch.nonzero(dist >= dist.max() - TIE_TOL)[0].item())  # 0-based farthest point
    below = signed[p].item() < -TIE_TOL
    return p if below else p + 1


def _signed_chord_distance(s: torch.Tensor, top: float, bottom: float) -> torch.Tensor:
    """Perpendicular distance of each normalised point to the chord; positive above, negative below."""
    r = s.numel()
    x = torch.arange(r, dtype=torch.float64) / (r - 1)
    y = (s - bottom) / (top - bottom)
    # Sorted descending, the chord runs from (0, 1) to (1, 0): the line x + y - 1 = 0.
    return (x + y - 1.0) / math.sqrt(2.0)
