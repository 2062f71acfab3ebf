"""The folded key bias (Token Reweighting, Importance Guidance) against an explicit softmax, in every layout
ComfyUI's attention backends are called with, whole and a group of heads at a time."""
import math

import pytest
import torch

from tokenfocus.runtime.attention_call import AttentionCall, KeyBias

B, H, LQ, LK, D = 2, 4, 6, 5, 16


def comfy_convention_backend(calls):
    """A backend with the calling convention of ComfyUI's attention functions (q, k, v, heads, mask=,
    skip_reshape=, skip_output_reshape=), doing plain float64 attention; records the heads of each call."""

    def backend(args, kwargs):
        q, k, v = args[:3]
        heads = kwargs["heads"] if "heads" in kwargs else args[3]
        mask = kwargs.get("mask", args[4] if len(args) > 4 else None)
        calls.append({"heads": heads, "q_shape": tuple(q.shape)})
        if not kwargs.get("skip_reshape", False):
            b = q.shape[0]
            q, k, v = (t.reshape(b, t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))
        logits = q.double() @ k.double().transpose(-1, -2) / math.sqrt(q.shape[-1])
        if mask is not None:
            logits = logits + mask.double()
        out = (logits.softmax(-1) @ v.double()).to(q.dtype)
        if kwargs.get("skip_output_reshape", False):
            return out
        return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)

    return backend


def reference(q, k, v, bias, biased, mask=None):
    """softmax(q·k/√d + bias_j for the biased queries) v, in float64; q, k, v as [B, H, L, D]."""
    logits = q.double() @ k.double().transpose(-1, -2) / math.sqrt(q.shape[-1])
    logits = logits + (biased.double()[:, None, :, None] * bias.double()[:, None, None, :])
    if mask is not None:
        logits = logits + mask.double()
    return logits.softmax(-1) @ v.double()


def tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, n, D, generator=g) for n in (LQ, LK, LK))
    bias = torch.randn(LK, generator=g)
    return q, k, v, bias


def layout(q, k, v, style):
    """args/kwargs as ComfyUI's models hand them to the attention function."""
    if style == "flat":          # Wan: [B, L, H*D], heads positional
        flat = [t.transpose(1, 2).reshape(B, t.shape[2], H * D) for t in (q, k, v)]
        return flat + [H], {}
    if style == "sd3":           # SD3: q, k flat, v as [B, L, H, D], heads keyword
        return [q.transpose(1, 2).reshape(B, LQ, H * D), k.transpose(1, 2).reshape(B, LK, H * D),
                v.transpose(1, 2)], {"heads": H}
    if style == "heads_first":   # Flux, HunyuanVideo: [B, H, L, D], skip_reshape
        return [q, k, v, H], {"skip_reshape": True}
    if style == "heads_first_out":
        return [q, k, v, H], {"skip_reshape": True, "skip_output_reshape": True}
    raise AssertionError(style)


def as_heads(out, style):
    return out if style == "heads_first_out" else out.reshape(B, LQ, H, D).transpose(1, 2)


def biased_call(style, budget_heads=None, mask=None, positional_mask=False):
    q, k, v, bias = tensors()
    args, kwargs = layout(q, k, v, style)
    if mask is not None:
        if positional_mask:
            args = args + [mask]
        else:
            kwargs["mask"] = mask
    call = AttentionCall("joint", None, tuple(args), kwargs)
    queries = torch.tensor([True, True, False, True, True, False])
    call.key_bias().add(slice(0, LK), bias, [1], queries)
    key_bias = call.pending_key_bias
    if budget_heads is not None:      # a budget that holds exactly this many heads' widened copies
        key_bias.WIDENED_BUDGET = budget_heads * B * (2 * LQ + 2 * LK) * (D + KeyBias.PAD) * q.element_size()
        key_bias.WIDENED_SHARE = 0.0
    biased = torch.zeros(B, LQ, dtype=torch.bool)
    biased[1] = queries
    per_sample_bias = torch.zeros(B, LK)
    per_sample_bias[1] = bias
    return call, reference(q, k, v, per_sample_bias, biased, mask)


@pytest.mark.parametrize("style", ["flat", "sd3", "heads_first", "heads_first_out"])
@pytest.mark.parametrize("group", [None, 1, 3])
def test_folded_bias_equals_the_explicit_logit_bias(style, group):
    call, expected = biased_call(style, budget_heads=group)
    calls = []
    out = call.run(comfy_convention_backend(calls))
    torch.testing.assert_close(as_heads(out, style).double(), expected, rtol=1e-5, atol=1e-5)
    assert out.is_contiguous()
    # Whole call when the widened copies fit the budget, else groups of at most `group` heads covering all.
    assert [c["heads"] for c in calls] == ([H] if group is None else [min(group, H - h) for h in range(0, H, group)])


def test_unbiased_sample_and_queries_are_unchanged():
    call, _ = biased_call("flat")
    q, k, v, _ = tensors()
    plain = reference(q, k, v, torch.zeros(B, LK), torch.zeros(B, LQ, dtype=torch.bool))
    out = as_heads(call.run(comfy_convention_backend([])), "flat").double()
    torch.testing.assert_close(out[0], plain[0], rtol=1e-5, atol=1e-5)              # sample 0: no bias
    torch.testing.assert_close(out[1][:, [2, 5]], plain[1][:, [2, 5]], rtol=1e-5, atol=1e-5)  # its unbiased queries
    assert not torch.allclose(out[1][:, 0], plain[1][:, 0], atol=1e-3)


@pytest.mark.parametrize("positional", [False, True])
def test_a_per_head_mask_is_cut_to_each_group(positional):
    mask = torch.randn(B, H, LQ, LK)
    call, expected = biased_call("heads_first", budget_heads=1, mask=mask, positional_mask=positional)
    out = call.run(comfy_convention_backend([]))
    torch.testing.assert_close(as_heads(out, "heads_first").double(), expected, rtol=1e-5, atol=1e-5)


def test_a_broadcast_mask_reaches_every_group_whole():
    mask = torch.randn(B, 1, 1, LK)
    call, expected = biased_call("heads_first", budget_heads=2, mask=mask)
    out = call.run(comfy_convention_backend([]))
    torch.testing.assert_close(as_heads(out, "heads_first").double(), expected, rtol=1e-5, atol=1e-5)


def test_the_widened_copies_are_bounded_by_the_budget_not_the_image():
    long_q = torch.zeros(1, 64, 4096, 8)
    call = AttentionCall("cross_text", None, (long_q, long_q[:, :, :16], long_q[:, :, :16], 64), {"skip_reshape": True})
    key_bias = call.key_bias()
    per_head = 1 * (2 * 4096 + 2 * 16) * (8 + KeyBias.PAD) * 4
    assert key_bias.heads_per_group(call.query_heads(), call.key_heads()) == min(64, KeyBias.WIDENED_BUDGET // per_head)
    assert key_bias.heads_per_group(call.query_heads(), call.key_heads()) * per_head <= KeyBias.WIDENED_BUDGET
    key_bias.WIDENED_BUDGET, key_bias.WIDENED_SHARE = per_head // 2, 0.0   # one head over the budget: one a call
    assert key_bias.heads_per_group(call.query_heads(), call.key_heads()) == 1


@pytest.mark.parametrize("name, heads, queries, keys", [
    ("Wan 14B 720p 81 frames, text cross-attention", 40, 75600, 512),
    ("Wan 14B 480p 81 frames, text cross-attention", 40, 32760, 512),
    ("HunyuanVideo 720p 129 frames, joint attention", 24, 119040, 119040 + 256),
])
def test_a_video_call_takes_a_handful_of_groups_and_a_bounded_share_of_memory(name, heads, queries, keys):
    """Sized relative to the call: at video lengths a few groups of heads, each group's widened copies at
    most half of what the call's q, k and v hold (the fixed 32 MiB of before meant one head a group)."""
    d, element = 128, 2                                          # bf16
    q = torch.empty(1, heads, queries, d, dtype=torch.bfloat16, device="meta")
    k = torch.empty(1, heads, keys, d, dtype=torch.bfloat16, device="meta")
    group = KeyBias.heads_per_group(KeyBias.__new__(KeyBias), q, k)
    groups = -(-heads // group)
    widened = group * (2 * queries + 2 * keys) * (d + KeyBias.PAD) * element
    call_bytes = heads * (queries + 2 * keys) * d * element
    assert groups <= 6, f"{name}: {groups} groups"
    assert widened <= max(KeyBias.WIDENED_BUDGET, 0.5 * call_bytes), name


def test_a_biased_call_frees_its_inputs_without_the_garbage_collector():
    """No reference cycle: q, k and v go as soon as the block drops them, not at the next gc pass (they would
    otherwise stay alive through the rest of the block, its FFN included)."""
    import gc
    import weakref

    q, k, v, bias = tensors()
    args, kwargs = layout(q, k, v, "flat")
    watched = [weakref.ref(t) for t in args[:3]]
    call = AttentionCall("cross_text", None, tuple(args), kwargs)
    call.key_bias().add(slice(0, LK), bias, [0, 1], torch.ones(LQ, dtype=torch.bool))
    gc.disable()
    try:
        out = call.run(comfy_convention_backend([]))
        del call, args, q, k, v
        assert all(ref() is None for ref in watched)
    finally:
        gc.enable()
    assert out.shape == (B, LQ, H * D)
