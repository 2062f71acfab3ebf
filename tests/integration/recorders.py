"""Test-owned patches that watch what blocks and attention calls receive, the way another pack's would.

`AttentionRecorder.around(node)` puts a recording attention override and block patches on the model BEFORE
a TokenFocus node runs (so TokenFocus must wrap them), and a second recording override AFTER it (so it wraps
TokenFocus). For every attention call the outer record holds q/k as ComfyUI produced them and the inner
record holds q/k as the backend receives them: their ratio is exactly what TokenFocus changed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Call:
    block: tuple
    index: int           # n-th attention call inside the block
    sigma: float
    q: torch.Tensor
    k: torch.Tensor
    backend: str


class AttentionRecorder:
    def __init__(self, n_double: int, n_single: int = 0, block_patches: bool = True):
        # block_patches=False: only the attention overrides (a model whose block-replace path fails in ComfyUI);
        # calls are then placed by the model's own block mark.
        self.blocks = [("double_block", i) for i in range(n_double)] + [("single_block", i) for i in range(n_single)]
        self.blocks = self.blocks if block_patches else []
        self.block = None
        self.counters = {"outer": 0, "inner": 0}
        self.records = {"outer": [], "inner": []}
        self.marked = {}
        self.inner_runs = 0

    def _block_patch(self, block):
        def patch(args, extra):
            self.block, self.counters = block, {"outer": 0, "inner": 0}
            try:
                return extra["original_block"](args)
            finally:
                self.block = None
        return patch

    def _override(self, where, previous):
        def override(func, *args, **kwargs):
            block = self.block
            options = kwargs.get("transformer_options") or {}
            if block is None and options.get("block_index") is not None:
                # A model that marks its blocks itself and has no block-replace hook (Z-Image, Lumina 2).
                block = ("double_block", int(options["block_index"]))
                if self.marked.get(where) != block:
                    self.marked[where], self.counters[where] = block, 0
            if block is not None:
                sigma = float(options["sigmas"].reshape(-1)[0])
                self.records[where].append(Call(block, self.counters[where], sigma, args[0].detach().clone(),
                                                args[1].detach().clone(), getattr(func, "__name__", str(func))))
                self.counters[where] += 1
            if where == "inner":
                self.inner_runs += 1
            if previous is not None:
                return previous(func, *args, **kwargs)
            return func(*args, **kwargs)
        return override

    def before(self, patcher):
        """Block patches on every block and an attention override, as a pack applied earlier would."""
        patched = patcher.clone()
        for kind, index in self.blocks:
            patched.set_model_patch_replace(self._block_patch((kind, index)), "dit", kind, index)
        options = patched.model_options["transformer_options"]
        options["optimized_attention_override"] = self._override("inner", options.get("optimized_attention_override"))
        return patched

    def after(self, patcher):
        """An attention override added by a pack applied later, wrapping whatever is there."""
        patched = patcher.clone()
        options = patched.model_options["transformer_options"]
        options["optimized_attention_override"] = self._override("outer", options.get("optimized_attention_override"))
        return patched

    def pairs(self):
        outer, inner = self.records["outer"], self.records["inner"]
        assert len(outer) == len(inner), "every attention call must pass both recorders"
        for o, i in zip(outer, inner):
            assert (o.block, o.index, o.sigma) == (i.block, i.index, i.sigma)
        return list(zip(outer, inner))


def scaled_by(before: torch.Tensor, after: torch.Tensor, factor: float) -> bool:
    return torch.allclose(after, before * factor, rtol=1e-5, atol=1e-6)


class BlockInputRecorder:
    """Block patches that record a block's `txt` (or joint sequence) as it arrives, one before a TokenFocus
    node (seeing what TokenFocus hands the block) and one after it (seeing what ComfyUI hands TokenFocus).

    marked=True: a model with no block-replace hook that calls patches["double_block"] after each block
    (Z-Image, Lumina 2): the patch after block i records what block i + 1 receives. ComfyUI calls those
    patches in the order they were added, so there the one added before TokenFocus sees the text first."""

    def __init__(self, blocks, marked=False):
        self.blocks = list(blocks)
        self.marked = marked
        self.records = {"outer": [], "inner": []}
        self.outputs = {"outer": [], "inner": []}

    def _post_patch(self, where):
        def patch(args):
            block = ("double_block", int(args["block_index"]) + 1)
            if block in self.blocks:
                options = args["transformer_options"]
                self.records[where].append((block, float(options["sigmas"].reshape(-1)[0]),
                                            tuple(options["cond_or_uncond"]), args["txt"].detach().clone()))
            return {}
        return patch

    def _patch(self, where, block, previous):
        def patch(args, extra):
            # The block's text: `txt`, LTX-2's video text `v_context`, else the joint sequence (single blocks).
            key = next(k for k in ("txt", "v_context", "img") if args.get(k) is not None)
            options = args["transformer_options"]
            self.records[where].append((block, float(options["sigmas"].reshape(-1)[0]),
                                        tuple(options["cond_or_uncond"]), args[key].detach().clone()))
            out = previous(args, extra) if previous is not None else extra["original_block"](args)
            carried = out.get(key)     # the text (or joint sequence) the block hands on; None after SD3's last
            self.outputs[where].append(None if carried is None else carried.detach().clone())
            return out
        return patch

    def _install(self, patcher, where):
        patched = patcher.clone()
        if self.marked:
            patched.set_model_patch(self._post_patch({"inner": "outer", "outer": "inner"}[where]), "double_block")
            return patched
        existing = patched.model_options["transformer_options"].get("patches_replace", {}).get("dit", {})
        for kind, index in self.blocks:
            patched.set_model_patch_replace(self._patch(where, (kind, index), existing.get((kind, index))), "dit", kind, index)
        return patched

    def before(self, patcher):
        return self._install(patcher, "inner")

    def after(self, patcher):
        return self._install(patcher, "outer")

    def pairs(self):
        outer, inner = self.records["outer"], self.records["inner"]
        assert len(outer) == len(inner)
        return [(o[0], o[1], o[2], o[3], i[3]) for o, i in zip(outer, inner)]

    def output_pairs(self):
        """(what the stream carries on from the block, what the block itself returned), per block call."""
        outer, inner = self.outputs["outer"], self.outputs["inner"]
        assert len(outer) == len(inner)
        return list(zip(outer, inner))
