"""Faithful stand-ins for other packs' patches that cannot be installed here (no CUDA kernels, no network).

Each reproduces what the real pack does to the model's options, nothing more:
- `kjnodes_style_sage(patcher)`: like KJNodes' *Patch Sage Attention KJ*, sets `optimized_attention_override`
  to a function that calls its own kernel with the call's arguments and drops both `func` and whatever override
  was there. The "kernel" here is ComfyUI's PyTorch attention (sage has no CPU build), counted per call.
- `attention_backend_lambda(patcher)`: like ComfyUI 2026's *ModelAttentionBackend* node, a lambda that calls the
  chosen backend and drops `func` and the previous override, marked `memory_efficient` as ComfyUI reads it.
- `teacache_style_forward(patcher)`: like TeaCache (welltop-cn), replaces the diffusion model's forward by an
  object patch whose forward runs the blocks without `transformer_options`, so no block patch is reached.
"""
from __future__ import annotations

import inspect
import types


class Kernel:
    """A stand-in attention kernel: ComfyUI's PyTorch attention."""

    def __call__(self, *args, **kwargs):
        from comfy.ldm.modules.attention import attention_pytorch

        kwargs = {k: v for k, v in kwargs.items() if k != "transformer_options"}
        kwargs["_inside_attn_wrapper"] = True      # ComfyUI's own marker: call the backend, not an override
        return attention_pytorch(*args, **kwargs)


class CountingKernel(Kernel):
    """The stand-in kernel, counting the calls it gets (not for compiled runs: the count is a guard)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return super().__call__(*args, **kwargs)


def kjnodes_style_sage(patcher, kernel: Kernel):
    patched = patcher.clone()

    def attention_override_sage(func, *args, **kwargs):
        return kernel(*args, **kwargs)

    patched.model_options["transformer_options"]["optimized_attention_override"] = attention_override_sage
    return patched


def attention_backend_lambda(patcher, kernel: Kernel):
    patched = patcher.clone()
    override = lambda func, *args, **kwargs: kernel(*args, **kwargs)  # noqa: E731  (as the node writes it)
    override.memory_efficient = True
    patched.model_options["transformer_options"]["optimized_attention_override"] = override
    return patched


def teacache_style_forward(patcher):
    """Flux only: forward_orig replaced by one that hands the blocks no transformer_options."""
    patched = patcher.clone()
    model = patched.get_model_object("diffusion_model")
    original = type(model).forward_orig
    signature = inspect.signature(original)

    def forward_without_options(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.arguments["transformer_options"] = {}
        return original(*bound.args, **bound.kwargs)

    patched.add_object_patch("diffusion_model.forward_orig", types.MethodType(forward_without_options, model))
    return patched
