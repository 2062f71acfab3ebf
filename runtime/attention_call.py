"""One attention call as the attention hook sees it, with layout-aware edits of q and k.

ComfyUI passes q and k either as [B, L, H·D] with `heads=` (Wan, SD3) or as [B, H, L, D] with
`skip_reshape=True` (Flux, HunyuanVideo). Edits produce new tensors (never in place: the caller may still
hold q and k) and the backend ComfyUI chose is then called as usual, so its fast kernel stays in use.
"""
from __future__ import annotations

import torch


class AttentionCall:
    def __init__(self, kind: str, ctx, args: tuple, kwargs: dict):
        self.kind = kind
        self.ctx = ctx
        self.args = list(args)
        self.kwargs = kwargs
        self.heads_first = bool(kwargs.get("skip_reshape", False))
        self.heads = kwargs["heads"] if "heads" in kwargs else args[3]
        self._key_bias = None
        self.changed = False        # set by every edit: the hook counts the interventions that changed it

    @property
    def q(self) -> torch.Tensor:
        return self.args[0]

    @property
    def k(self) -> torch.Tensor:
        return self.args[1]

    def _as_heads(self, t: torch.Tensor) -> torch.Tensor:
        if self.heads_first:
            return t
        # q/k are [B, L, H*D]; SD3 hands v over as [B, L, H, D]: both read the same way.
        b, length = t.shape[:2]
        return t.reshape(b, length, self.heads, -1).transpose(1, 2)

    def key_bias(self) -> "KeyBias":
        """The call's key bias, created on first use; folded in just before the backend runs."""
        if self._key_bias is None:
            self._key_bias = KeyBias(self.query_heads(), self.key_heads())
        self.changed = True
        return self._key_bias

    @property
    def pending_key_bias(self) -> "KeyBias | None":
        """The key bias earlier interventions added to this call, not yet folded in (or None)."""
        return self._key_bias

    def run(self, backend) -> torch.Tensor:
        """Call backend(args, kwargs) with the edited q and k, folding in a pending key bias."""
        if self._key_bias is None:
            return backend(tuple(self.args), self.kwargs)
        return self._key_bias.run(self, backend)

    def with_heads(self, args: list, heads: int) -> tuple[tuple, dict]:
        """args/kwargs for a backend call on `heads` of the heads (q, k, v already sliced in args)."""
        kwargs = dict(self.kwargs)
        if "heads" in kwargs:
            kwargs["heads"] = heads
        else:
            args[3] = heads
        return tuple(args), kwargs

    def query_heads(self) -> torch.Tensor:
        """q as a [B, H, L, D] view."""
        return self._as_heads(self.q)

    def key_heads(self) -> torch.Tensor:
        return self._as_heads(self.k)

    def _scaled(self, t: torch.Tensor, factor) -> torch.Tensor:
        if not isinstance(factor, torch.Tensor):
            return t * factor
        factor = factor.to(device=t.device, dtype=t.dtype)          # [B, H]
        if self.heads_first:
            return t * factor[:, :, None, None]
        b, length, width = t.shape
        return (t.view(b, length, self.heads, width // self.heads) * factor[:, None, :, None]).reshape(b, length, width)

    def scale_query(self, factor) -> None:
        """Multiply q by a float, or by a [B, H] tensor (one factor per sample and head)."""
        self.args[0] = self._scaled(self.q, factor)
        self.changed = True

    def scale_key(self, factor) -> None:
        self.args[1] = self._scaled(self.k, factor)
        self.changed = True


class KeyBias:
    """A per-key logit bias for some queries, folded into extra head dimensions so that no attention map or
    float mask is built and the backend keeps its kernel (a float mask would move CUDA SDPA off flash
    attention, and not every backend takes one):

        q' = [q, m_i, 0…],  k' = [k·√(d'/d), bias_j·√d', 0…],  v' = [v, 0…]
        q'·k'/√d' = q·k/√d + m_i·bias_j   (d' = d + 8, so a multiple of 8 stays one; m_i = 1 for a biased
                                          query, 0 for the others, a region mask's value in between)

    The widened copies are made a group of heads at a time, written straight into the layout the backend
    reads, and each group's output goes straight into the call's output. A group's copies hold at most
    max(WIDENED_BUDGET, WIDENED_SHARE of the call's q, k and v) bytes (or one head): the memory they add is a
    bounded fraction of what the call already holds, and a long video still takes a handful of backend calls
    (Wan 14B at 720p, 81 frames: 5), not one per head.
    """

    PAD = 8
    WIDENED_BUDGET = 32 * 2 ** 20
    WIDENED_SHARE = 0.5

    # It holds no reference to its call: call -> bias -> call would be a cycle that keeps the call's q, k
    # and v alive until the garbage collector runs, well into the rest of the block.
    def __init__(self, q: torch.Tensor, k: torch.Tensor):
        b, h, lq, d = q.shape
        lk = k.shape[2]
        self.bias = torch.zeros(b, lk, dtype=torch.float32, device=q.device)
        # How much of the bias each query takes: 1, 0, or a region mask's value in between.
        self.biased_queries = torch.zeros(b, lq, dtype=torch.float32, device=q.device)

    def add(self, key_slice: slice, bias: torch.Tensor, samples: list, query_mask: torch.Tensor) -> None:
        """bias [Lk_slice] on the keys in key_slice, for the samples (batch indices) and queries (bool or
        float [Lq]: the fraction of the bias each query takes)."""
        for b in samples:
            self.bias[b, key_slice] += bias.to(self.bias)
            self.biased_queries[b] = torch.maximum(self.biased_queries[b], query_mask.to(self.biased_queries))

    def heads_per_group(self, q: torch.Tensor, k: torch.Tensor) -> int:
        """Heads a backend call takes, for [B, H, L, D] q and k."""
        b, heads, lq, d = q.shape
        # q', and the group's output, for the queries; k' and v' for the keys.
        per_head = b * (2 * lq + 2 * k.shape[2]) * (d + self.PAD) * q.element_size()
        call_bytes = (q.numel() + 2 * k.numel()) * q.element_size()      # v has k's shape
        budget = max(self.WIDENED_BUDGET, int(self.WIDENED_SHARE * call_bytes))
        return max(1, min(heads, budget // per_head))

    def run(self, call: "AttentionCall", backend) -> torch.Tensor:
        q, k, v = call.query_heads(), call.key_heads(), call._as_heads(call.args[2])
        b, heads, lq, d = q.shape
        padded = d + self.PAD
        # The extra columns are the same for every head: built once, broadcast over each group.
        query_extra = self.biased_queries[:, None, :].to(q.dtype)
        key_extra = (self.bias * padded ** 0.5)[:, None, :].to(k.dtype)
        key_scale = (padded / d) ** 0.5
        heads_first_out = call.kwargs.get("skip_output_reshape", False)
        out = q.new_empty(b, heads, lq, d) if heads_first_out else q.new_empty(b, lq, heads, d)
        group = self.heads_per_group(q, k)
        for h0 in range(0, heads, group):
            h1 = min(heads, h0 + group)
            q_wide, q_main, q_more = self._widened(call, q, h0, h1, padded)
            q_main.copy_(q[:, h0:h1])
            q_more[..., 0] = query_extra
            k_wide, k_main, k_more = self._widened(call, k, h0, h1, padded)
            k_main.copy_(k[:, h0:h1]).mul_(key_scale)
            k_more[..., 0] = key_extra
            v_wide, v_main, _ = self._widened(call, v, h0, h1, padded)
            v_main.copy_(v[:, h0:h1])
            args, kwargs = call.with_heads([q_wide, k_wide, v_wide] + call.args[3:], h1 - h0)
            part = backend(*self._mask_for_heads(args, kwargs, h0, h1))
            if heads_first_out:
                out[:, h0:h1] = part[..., :d]
            else:
                out[:, :, h0:h1] = part.view(b, lq, h1 - h0, padded)[..., :d]
            del q_wide, k_wide, v_wide, part
        return out if heads_first_out else out.view(b, lq, heads * d)

    @staticmethod
    def _widened(call: "AttentionCall", t: torch.Tensor, h0: int, h1: int, padded: int):
        """Heads h0:h1 of t widened to `padded`: (tensor in the backend's layout, its [B, h, L, :d] view to
        fill, its [B, h, L, d:] view, zeroed)."""
        b, _, length, d = t.shape
        count = h1 - h0
        if call.heads_first:
            wide = t.new_empty(b, count, length, padded)
            heads_view = wide
        else:
            wide = t.new_empty(b, length, count * padded)
            heads_view = wide.view(b, length, count, padded).transpose(1, 2)
        extra = heads_view[..., d:]
        extra.zero_()
        return wide, heads_view[..., :d], extra

    @staticmethod
    def _mask_for_heads(args: tuple, kwargs: dict, h0: int, h1: int) -> tuple[tuple, dict]:
        """A mask with one slice per head is cut to the group; a broadcast one passes as it is."""
        positional = "mask" not in kwargs and len(args) > 4
        mask = args[4] if positional else kwargs.get("mask")
        if not (isinstance(mask, torch.Tensor) and mask.ndim == 4 and mask.shape[1] > 1):
            return args, kwargs
        if positional:
            return args[:4] + (mask[:, h0:h1],) + args[5:], kwargs
        return args, dict(kwargs, mask=mask[:, h0:h1])
