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

    @property
    def q(self) -> torch.Tensor:
        return self.args[0]

    @property
    def k(self) -> torch.Tensor:
        return self.args[1]

    def _as_heads(self, t: torch.Tensor) -> torch.Tensor:
        if self.heads_first:
            return t
        b, length, width = t.shape
        return t.view(b, length, self.heads, width // self.heads).transpose(1, 2)

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
