"""Attention statistics without attention maps: what the Attention Inspector measures, as pure tensor math.

For a set of queries (one sample, all heads) and all the keys of an attention call, `attention_to_text`
returns, per query and averaged over the heads:

  probs[q, r]    p(q -> text key r): the attention probability with the softmax normaliser over ALL keys
                 (in joint attention the image keys too), so Σ_r probs[q, r] = text_mass[q] ≤ 1;
  text_mass[q]   Σ_r p(q -> r): the part of the query's attention that goes to the text (1 in cross-attention);
  shares[q, r]   p(q -> r) / Σ_text p: how the query's text attention splits over the text keys (Σ_r = 1);
  entropy[q]     -Σ_j p_j log p_j over all keys, in nats.

The normaliser is a streaming log-sum-exp over key chunks (running max m, s = Σ e^(l-m), t = Σ e^(l-m)·l,
so lse = m + log s and the entropy is lse - t/s), and queries, heads and keys are chunked so that no float32
block (logits, or the keys they are computed from) holds more than `budget` elements; at most three such
blocks are alive at once. Nothing of size queries × keys is ever kept.

Logits are what the backend computes: q·k·scale (scale = 1/√d unless given), plus an additive mask if the
call carries one, plus a per-key bias for the queries it applies to (TokenFocus's pending key bias).

Also here: the deterministic query samples and the pooled frame grid the inspector records on. No global
random generator is touched (sampling would otherwise change under the inspector), no ComfyUI import.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DEFAULT_BUDGET = 1 << 24        # float32 elements in one logits block: 64 MiB
KEY_CHUNK = 4096
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass
class TextAttention:
    probs: torch.Tensor                 # [n, R] float32
    text_mass: torch.Tensor             # [n]
    shares: torch.Tensor | None = None  # [n, R]
    entropy: torch.Tensor | None = None # [n]


def additive_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """A backend attention mask as an additive float32 mask (bool: True = may attend, as in SDPA)."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        return out.masked_fill_(~mask, float("-inf"))
    return mask.float()


def _rows(t: torch.Tensor | None, rows: torch.Tensor | None, h0: int, h1: int, q0: int, q1: int,
          keys: slice) -> torch.Tensor | None:
    """The additive float32 mask for heads h0:h1, queries q0:q1 and the keys, from a [Hm, Lm, Lk] mask
    (Hm ∈ {1, H}; Lm = 1, or one row per query, or rows picked by `rows`); only this block is converted."""
    if t is None:
        return None
    t = t[h0:h1] if t.shape[0] > 1 else t
    if t.shape[1] > 1:
        t = t[:, q0:q1] if rows is None else t.index_select(1, rows[q0:q1].to(t.device))
    return additive_mask(t[:, :, keys])


def attention_to_text(q: torch.Tensor, k: torch.Tensor, text: slice, *, key_bias: torch.Tensor | None = None,
                      biased: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                      mask_rows: torch.Tensor | None = None, query_index: torch.Tensor | None = None,
                      scale: float | None = None,
                      want_shares: bool = True, want_entropy: bool = True, budget: int = DEFAULT_BUDGET,
                      key_chunk: int = KEY_CHUNK) -> TextAttention:
    """Attention of n queries to the text keys, averaged over heads; see the module docstring.

    q [H, n, D] and k [H, Lk, D] of one sample; text: the slice of the keys that are text (R rows).
    key_bias [Lk]: added to the logits of the queries where `biased` [n] is True (all queries if None).
    mask: additive (or bool: True = may attend) mask [Hm, Lm, Lk], Hm ∈ {1, H}; Lm = 1 (the same for every
    query), or Lm = n, or any Lm with `mask_rows` [n] giving each query's row. Converted block by block.
    query_index [n]: measure the queries q[:, query_index] (taken chunk by chunk, never copied whole); `biased`
    and `mask_rows` then describe those n queries.
    Returns float32 tensors on q's device.
    """
    heads, n, dim = q.shape
    if query_index is not None:
        query_index = query_index.to(q.device)
        n = len(query_index)
    n_keys = k.shape[1]
    start, stop, _ = text.indices(n_keys)
    rows = stop - start
    scale = dim ** -0.5 if scale is None else scale
    if mask is not None and mask.ndim < 3:
        mask = mask.reshape((1,) * (3 - mask.ndim) + tuple(mask.shape))
    bias = key_bias.to(device=q.device, dtype=torch.float32) if key_bias is not None else None
    if bias is not None:
        factor = torch.ones(n, device=q.device) if biased is None else biased.to(device=q.device, dtype=torch.float32)

    key_chunk = max(1, min(n_keys, key_chunk))
    head_chunk = max(1, min(heads, budget // (key_chunk * max(dim, 1))))      # the float32 key block fits too
    query_chunk = max(1, min(n, budget // (head_chunk * max(key_chunk, rows, 1))))

    device = q.device
    probs = torch.zeros(n, rows, device=device)
    text_mass = torch.zeros(n, device=device)
    shares = torch.zeros(n, rows, device=device) if want_shares else None
    entropy = torch.zeros(n, device=device) if want_entropy else None
    text_keys = slice(start, stop)

    with torch.no_grad():
        for q0 in range(0, n, query_chunk):
            q1 = min(n, q0 + query_chunk)
            for h0 in range(0, heads, head_chunk):
                h1 = min(heads, h0 + head_chunk)
                qq = q[h0:h1, q0:q1] if query_index is None else q[h0:h1].index_select(1, query_index[q0:q1])
                qq = qq.float() * scale
                m = torch.full(qq.shape[:2], float("-inf"), device=device)
                s = torch.zeros(qq.shape[:2], device=device)
                t = torch.zeros(qq.shape[:2], device=device) if want_entropy else None
                for k0 in range(0, n_keys, key_chunk):
                    keys = slice(k0, min(n_keys, k0 + key_chunk))
                    logits = _logits(qq, k[h0:h1, keys], _rows(mask, mask_rows, h0, h1, q0, q1, keys),
                                     None if bias is None else (bias[keys], factor[q0:q1]))
                    m_new = torch.maximum(m, logits.amax(dim=-1))
                    ref = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
                    alpha = torch.exp(m - ref)
                    finite = torch.nan_to_num(logits, nan=0.0, neginf=0.0) if want_entropy else None
                    e = logits.sub_(ref[..., None]).exp_()       # in place: our own block, two live at most
                    s = s * alpha + e.sum(dim=-1)
                    if want_entropy:
                        t = t * alpha + (e.unsqueeze(-2) @ finite.unsqueeze(-1))[..., 0, 0]
                    m = ref
                lse = m + torch.log(s)
                text_logits = _logits(qq, k[h0:h1, text_keys], _rows(mask, mask_rows, h0, h1, q0, q1, text_keys),
                                      None if bias is None else (bias[text_keys], factor[q0:q1]))
                p = torch.exp(text_logits - lse[..., None])
                probs[q0:q1] += p.sum(dim=0)
                text_mass[q0:q1] += p.sum(dim=(0, 2))
                if want_shares:
                    shares[q0:q1] += torch.softmax(text_logits, dim=-1).nan_to_num(0.0).sum(dim=0)
                if want_entropy:
                    entropy[q0:q1] += (lse - t / s).sum(dim=0)
    out = TextAttention(probs / heads, text_mass / heads)
    if want_shares:
        out.shares = shares / heads
    if want_entropy:
        out.entropy = entropy / heads
    return out


def _logits(qq, kk, mask, bias):
    logits = qq @ kk.float().transpose(-1, -2)
    if mask is not None:
        logits.add_(mask)
    if bias is not None:
        key_bias, per_query = bias
        logits.add_(per_query[None, :, None] * key_bias[None, None, :])
    return logits


def reference_text_attention(q, k, text: slice, key_bias=None, biased=None, mask=None, scale=None) -> TextAttention:
    """The same numbers from the full attention map in float64: for tests, never for the runtime."""
    heads, n, dim = q.shape
    scale = dim ** -0.5 if scale is None else scale
    logits = (q.double() @ k.double().transpose(-1, -2)) * scale
    if mask is not None:
        logits = logits + additive_mask(mask).double()
    if key_bias is not None:
        factor = torch.ones(n, dtype=torch.float64) if biased is None else biased.double()
        logits = logits + factor[None, :, None] * key_bias.double()[None, None, :]
    log_p = torch.log_softmax(logits, dim=-1)
    p = log_p.exp()
    text_p = p[..., text]
    return TextAttention(
        probs=text_p.mean(0), text_mass=text_p.sum(-1).mean(0),
        shares=torch.softmax(logits[..., text], dim=-1).mean(0),
        entropy=-(p * torch.where(p > 0, log_p, torch.zeros_like(log_p))).sum(-1).mean(0),
    )


# ---------------------------------------------------------------------------------------------- samples


def spread_sample(total: int, n: int, phase: float = 0.0) -> torch.Tensor:
    """n distinct indices evenly spread over range(total), shifted by `phase` ∈ [0, 1) of one stride;
    all of them when n ≥ total. Deterministic: no random generator is used."""
    if total <= 0 or n <= 0:
        return torch.zeros(0, dtype=torch.long)
    if n >= total:
        return torch.arange(total)
    phase = phase % 1.0
    return ((torch.arange(n, dtype=torch.float64) + phase) * (total / n)).floor().long().clamp_(0, total - 1)


def call_phase(counter: int) -> float:
    """A low-discrepancy phase for the counter-th recorded call (golden-ratio sequence)."""
    return (counter * GOLDEN) % 1.0


@dataclass(frozen=True)
class CellGrid:
    """The frame grid of the image/video tokens (frames, rows, cols), pooled into at most max_cells cells.

    Every call evaluates one token per cell (a different member of the cell on each call), so the heatmap
    costs at most `cells` queries per recorded call, whatever the resolution."""

    tokens: tuple            # (T, H, W) token grid
    factors: tuple           # (ft, fh, fw) pooling
    cells: tuple             # (Tc, Hc, Wc)

    @property
    def n_tokens(self) -> int:
        return self.tokens[0] * self.tokens[1] * self.tokens[2]

    @property
    def n_cells(self) -> int:
        return self.cells[0] * self.cells[1] * self.cells[2]

    @property
    def members(self) -> int:
        return self.factors[0] * self.factors[1] * self.factors[2]

    def sample_tokens(self, member: int) -> torch.Tensor:
        """For member index `member` (taken modulo the cell size): one flattened token index per cell, in
        cell order; cells cut by the grid's edge reuse their last token in range."""
        ft, fh, fw = self.factors
        member %= self.members
        ot, rest = divmod(member, fh * fw)
        oh, ow = divmod(rest, fw)
        tc, hc, wc = self.cells
        t_count, h_count, w_count = self.tokens
        tt = (torch.arange(tc) * ft + ot).clamp_(max=t_count - 1)
        hh = (torch.arange(hc) * fh + oh).clamp_(max=h_count - 1)
        ww = (torch.arange(wc) * fw + ow).clamp_(max=w_count - 1)
        return ((tt[:, None, None] * h_count + hh[None, :, None]) * w_count + ww[None, None, :]).reshape(-1)


def pooled_grid(tokens: tuple, max_cells: int) -> CellGrid:
    """Pool a (T, H, W) token grid by the smallest factors that bring it to at most max_cells cells:
    space first (equal factors on rows and columns), time only when one cell per frame is still too many."""
    t_count, h_count, w_count = (max(1, int(x)) for x in tokens)
    ft = 1
    while math.ceil(t_count / ft) > max_cells:
        ft += 1
    frames = math.ceil(t_count / ft)
    f = 1
    while frames * math.ceil(h_count / f) * math.ceil(w_count / f) > max_cells:
        f += 1
    cells = (frames, math.ceil(h_count / f), math.ceil(w_count / f))
    return CellGrid((t_count, h_count, w_count), (ft, f, f), cells)


def token_grid(latent_shape: tuple, patch: tuple) -> tuple | None:
    """(T, H, W) tokens of a latent [B, C, H, W] or [B, C, T, H, W] under a (pt, ph, pw) patch, as the
    models pad to whole patches (comfy.ldm.common_dit.pad_to_patch_size)."""
    if len(latent_shape) == 4:
        frames, height, width = 1, latent_shape[2], latent_shape[3]
    elif len(latent_shape) == 5:
        frames, height, width = latent_shape[2], latent_shape[3], latent_shape[4]
    else:
        return None
    pt, ph, pw = patch
    return (math.ceil(frames / pt), math.ceil(height / ph), math.ceil(width / pw))
