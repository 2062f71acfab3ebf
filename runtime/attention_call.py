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

    def _from_heads(self, t: torch.Tensor) -> torch.Tensor:
        if self.heads_first:
            return t
        b, h, length, d = t.shape
        return t.transpose(1, 2).reshape(b, length, h * d)

    def key_bias(self) -> "KeyBias":
        """The call's key bias, created on first use; folded in just before the backend runs."""
        if self._key_bias is None:
            self._key_bias = KeyBias(self)
        return self._key_bias

    @property
    def pending_key_bias(self) -> "KeyBias | None":
        """The key bias earlier interventions added to this call, not yet folded in (or None)."""
        return self._key_bias

    def before_backend(self) -> None:
        if self._key_bias is not None:
            self._key_bias.fold()

    def after_backend(self, out: torch.Tensor) -> torch.Tensor:
        return out if self._key_bias is None else self._key_bias.unfold(out)

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

    def scale_key(self, factor) -> None:
        self.args[1] = self._scaled(self.k, factor)


class KeyBias:
    """A per-key logit bias for some queries, folded into one extra head dimension so that no attention
    map or float mask is built and the backend keeps its fast kernel:

        q' = [q·√(d'/d), 1 for biased queries, 0…],  k' = [k, bias_j·√d', 0…],  v' = [v, 0…]
        q'·k'/√d' = q·k/√d + bias_j       (d' = d padded to the next multiple of 8)
    """

    PAD = 8

    def __init__(self, call: "AttentionCall"):
        self.call = call
        q = call.query_heads()
        b, h, lq, d = q.shape
        lk = call.key_heads().shape[2]
        self.bias = torch.zeros(b, lk, dtype=torch.float32, device=q.device)
        self.biased_queries = torch.zeros(b, lq, dtype=torch.bool, device=q.device)

    def add(self, key_slice: slice, bias: torch.Tensor, samples: list, query_mask: torch.Tensor) -> None:
        """bias [Lk_slice] on the keys in key_slice, for the samples (batch indices) and queries (bool [Lq])."""
        for b in samples:
            self.bias[b, key_slice] += bias.to(self.bias)
            self.biased_queries[b] |= query_mask

    def fold(self) -> None:
        call = self.call
        q, k, v = call.query_heads(), call.key_heads(), call._as_heads(call.args[2])
        d = q.shape[-1]
        padded = d + self.PAD
        q_extra = torch.zeros(*q.shape[:-1], self.PAD, dtype=q.dtype, device=q.device)
        q_extra[..., 0] = self.biased_queries[:, None, :].to(q.dtype)
        k_extra = torch.zeros(*k.shape[:-1], self.PAD, dtype=k.dtype, device=k.device)
        k_extra[..., 0] = (self.bias * padded ** 0.5)[:, None, :].to(k.dtype)
        v_extra = torch.zeros(*v.shape[:-1], self.PAD, dtype=v.dtype, device=v.device)
        q = torch.cat([q * (padded / d) ** 0.5, q_extra], dim=-1)
        k = torch.cat([k, k_extra], dim=-1)
        v = torch.cat([v, v_extra], dim=-1)
        call.args[:3] = [call._from_heads(t) for t in (q, k, v)]
        call.head_dim = d

    def unfold(self, out: torch.Tensor) -> torch.Tensor:
        call = self.call
        d = call.head_dim
        if call.kwargs.get("skip_output_reshape", False):
            return out[..., :d]
        b, length, width = out.shape
        return out.view(b, length, call.heads, width // call.heads)[..., :d].reshape(b, length, call.heads * d)
